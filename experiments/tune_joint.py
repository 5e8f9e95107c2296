"""Choose a joint halting objective's training hyperparameters on val (docs/joint_halting.md records the grids).

    python experiments/tune_joint.py --task sp500 --halting ponder --out docs/joint_grid/sp500.jsonl [--epochs 10]
    python experiments/tune_joint.py --task sp500 --halting ponder --out docs/joint_grid/sp500.jsonl --choose

Each grid point trains one TRM from ``experiments/configs/<task>.json`` with ``halting`` and the point's fields
(seed 0 unless ``--seed``; ``--epochs`` may cut the epochs), then scores it on **val only**: the mean return
(step cost 0.01, reward profit_weighted_ce) of the objective's own halting rule (``agents.joint``) at its best
knob, beside the val accuracy and profit-weighted CE per step, the wall time and the CPU time. One JSON line per
point is appended to ``--out``; points already there are skipped. Each point's trained TRM is saved (``save_run``:
``model.pt``, ``config.json``, ``metrics.json``) in ``--models/<task>-<halting>/<point>/`` and its row names that
folder. The default grids are ``GRIDS`` (``--grid``
replaces them; ``--reduced``: the two-point grids ``REDUCED``). ``--choose`` reads ``--out`` and writes
``experiments/configs/<task>-<halting>.json``: the task's config with the best point's fields; with ``--ship`` it
also copies the best point's saved TRM into ``shipped_checkpoint(task, seed, halting)`` (seed 0 ships without
retraining).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from agents.evaluation import evaluate_policies
from agents.joint import JOINT_FAMILIES, joint_policies
from trm_env.core import DEFAULT_STEP_COST
from trm_env.io import atomic_dir
from trm_env.rollouts import shipped_checkpoint, simulate
from trm_env.tasks import load_task
from trm_env.training import TrainConfig, train

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MODEL_FILES = ("model.pt", "config.json", "metrics.json")
HYPERPARAMETERS = ("ponder_lambda_p", "ponder_beta", "act_tau", "q_weight", "exploration")  # the grids' fields
FAMILY = {objective: family for family, objective in JOINT_FAMILIES.items()}
GRIDS = {  # ponder: the post-hoc heads' PONDER_VARIANTS (agents.learners); act: the quick study's taus
    "ponder": [{"ponder_lambda_p": lp, "ponder_beta": b} for lp, b in ((0.1, 0.01), (0.2, 0.01), (0.4, 0.01),
                                                                      (0.2, 0.1))],
    "act": [{"act_tau": tau} for tau in (0.001, 0.01, 0.03)],
    "q_halt": [{"q_weight": 0.5, "exploration": e} for e in (0.1, 0.3, 0.6)],
}
REDUCED = {  # two points per objective (--reduced): what the CPU time allowed on regime-chain and pointer
    "ponder": GRIDS["ponder"][:2],
    "act": GRIDS["act"][:2],
    "q_halt": [GRIDS["q_halt"][0], GRIDS["q_halt"][2]],
}


def point_dir(models: Path, task: str, halting: str, fields: dict, seed: int) -> Path:
    """The folder of one grid point's saved TRM: ``<models>/<task>-<halting>/<field=value,...>-seed<seed>``."""
    return models / f"{task}-{halting}" / (",".join(f"{k}={v:g}" for k, v in fields.items()) + f"-seed{seed}")


def score(task: str, halting: str, fields: dict, seed: int, epochs: int | None, models: Path) -> dict:
    """Train one grid point, save its TRM under ``models`` and score its own halting rule on val."""
    config = TrainConfig.from_json(CONFIG_DIR / f"{task}.json")
    config.halting, config.seed = halting, seed
    if epochs is not None:
        config.epochs = epochs
    for name, value in fields.items():
        if name not in TrainConfig.__dataclass_fields__:
            raise ValueError(f"unknown TrainConfig field {name!r} in the grid")
        setattr(config, name, value)
    loaded = load_task(config.task, **config.task_kwargs)
    start, cpu = time.perf_counter(), time.process_time()
    out = point_dir(models, task, halting, fields, seed)
    model, metrics = train(config, out_dir=out, task=loaded, progress=False, tensorboard=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    table = simulate(loaded, model, split="val", cache_dir=False)
    frame = evaluate_policies(joint_policies(FAMILY[halting]), table, step_cost=DEFAULT_STEP_COST)
    by_knob = frame.groupby("param")[["episode_return", "halt_step", "correct"]].mean()
    best = by_knob["episode_return"].idxmax()
    return {"task": task, "halting": halting, **fields, "seed": seed, "epochs": config.epochs,
            "epochs_run": metrics["epochs_run"], "train_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
            "val_mean_return": float(by_knob.loc[best, "episode_return"]), "best_knob": float(best),
            "val_mean_steps": float(by_knob.loc[best, "halt_step"]),
            "val_accuracy_at_knob": float(by_knob.loc[best, "correct"]),
            "val_accuracy": metrics["val"]["accuracy"], "val_profit_weighted_ce": metrics["val"]["profit_weighted_ce"],
            "val_rule": metrics["val"]["halt_rule"], "model_dir": str(out)}  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def choose(task: str, halting: str, grid: Path, ship: bool = False) -> Path:
    """Write ``experiments/configs/<task>-<halting>.json`` from the grid point with the best val return; with
    ``ship``, copy that point's saved TRM into its shipped checkpoint folder."""
    rows = [r for r in _rows(grid) if r["task"] == task and r["halting"] == halting]
    if not rows:
        raise ValueError(f"{grid} holds no grid point of {task} {halting}")
    best = max(rows, key=lambda r: r["val_mean_return"])
    if ship:
        ship_point(best)
    config = json.loads((CONFIG_DIR / f"{task}.json").read_text())
    config.update({"halting": halting, **{k: best[k] for k in best if k in HYPERPARAMETERS}})
    path = CONFIG_DIR / f"{task}-{halting}.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def ship_point(row: dict) -> Path:
    """Copy the grid point's saved TRM (``row["model_dir"]``) into ``shipped_checkpoint`` atomically."""
    source = Path(row.get("model_dir", ""))
    if not all((source / name).is_file() for name in MODEL_FILES):
        raise ValueError(f"the grid point {row['task']} {row['halting']} has no saved TRM in {source}")
    target = shipped_checkpoint(row["task"], row["seed"], row["halting"])
    if target.exists():
        raise ValueError(f"{target} exists already: remove it to ship another point")
    with atomic_dir(target) as tmp:
        for name in MODEL_FILES:
            shutil.copyfile(source / name, tmp / name)
    return target


def markdown(grid: Path) -> str:
    """The grid of ``grid`` as a markdown table, the chosen point (best val return per task and objective) marked."""
    rows = _rows(grid)
    best = {(r["task"], r["halting"]): max(r2["val_mean_return"] for r2 in rows
                                          if (r2["task"], r2["halting"]) == (r["task"], r["halting"])) for r in rows}
    lines = ["| task | objective | hyperparameters | epochs (run) | val mean return | knob | val mean steps | "
             "val accuracy | wall s | CPU s | chosen |", "|" + "---|" * 11]  # fmt: skip
    for r in rows:
        fields = ", ".join(f"{k}={r[k]:g}" for k in r if k in HYPERPARAMETERS)
        lines.append(f"| {r['task']} | {r['halting']} | {fields} | {r['epochs']} ({r['epochs_run']}) | "
                     f"{r['val_mean_return']:.4f} | {r['best_knob']:g} | {r['val_mean_steps']:.2f} | "
                     f"{r['val_accuracy_at_knob']:.3f} | {r['train_seconds']:.0f} | "
                     f"{format(r['cpu_seconds'], '.0f') if 'cpu_seconds' in r else 'n/a'} | "
                     f"{'yes' if r['val_mean_return'] == best[(r['task'], r['halting'])] else ''} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--halting", required=True, choices=sorted(FAMILY))
    parser.add_argument("--grid", help="a JSON list of objects of TrainConfig fields (default GRIDS[halting])")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines file to append to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="cut the config's epochs for the grid")
    parser.add_argument("--reduced", action="store_true", help="the two-point grids REDUCED instead of GRIDS")
    parser.add_argument("--choose", action="store_true", help="write the config of the best point in --out")
    parser.add_argument("--table", action="store_true", help="print --out as a markdown table")
    parser.add_argument("--models", type=Path, default=Path("runs/tune_joint"), help="where each point's TRM is saved")
    parser.add_argument("--ship", action="store_true", help="with --choose: ship the best point's saved TRM")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(args.out))
        return
    if args.choose:
        print(f"wrote {choose(args.task, args.halting, args.out, args.ship)}")
        return
    done = _rows(args.out) if args.out.is_file() else []
    for fields in json.loads(args.grid) if args.grid else (REDUCED if args.reduced else GRIDS)[args.halting]:
        point = {"task": args.task, "halting": args.halting, **fields, "seed": args.seed}
        epochs = args.epochs or TrainConfig.from_json(CONFIG_DIR / f"{args.task}.json").epochs
        if any(all(row.get(k) == v for k, v in point.items()) and row["epochs"] == epochs for row in done):
            continue  # already scored: a rerun resumes
        row = score(args.task, args.halting, fields, args.seed, args.epochs, args.models)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"{args.task} {args.halting} {fields}: val return {row['val_mean_return']:.4f} at knob "
              f"{row['best_knob']:g} ({row['val_mean_steps']:.2f} steps), {row['train_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
