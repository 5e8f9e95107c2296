"""The main job: every halting family on every task, over several TRM seeds, chosen on val, reported on test.

    python experiments/run.py                      # quick config -> runs/quick/  (what `make run` does)
    python experiments/run.py --config full        # more RL seeds, costs and steps -> runs/full/
    python experiments/run.py --config my.json --out runs/mine --retrain

The protocol, enforced here: the TRM trains on ``train``; every halting learner (RL, fitted-Q) trains
on ``halt``, which the TRM never saw; every choice (each family's knob, the RL training cost, the
fixed-depth reference) is made on ``val``; ``test`` only reports.

Stages (each writes its artifact atomically with the key it was made under, ``<artifact>.key.json``;
a rerun redoes exactly the stages whose key changed, ``--force`` redoes all; ``config.json`` comes last):
1. per task and TRM seed: the shipped checkpoint, or with ``--retrain`` a fresh one in ``trm/<task>/seed<k>/``;
2. per task, TRM seed, RL training cost and RL seed: an agent trained on ``halt``: ``rl/<task>/trm<k>/*.zip``;
3. per task, TRM seed and policy group: halting steps on val and test: ``episodes/<task>/trm<k>/<group>.npz``;
4. the analysis: ``curves.csv`` (every point, val and test), ``summary.csv`` (val-chosen points on test),
   ``episodes.csv`` (their test episodes), the plots and ``report.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.curves import DEFAULT_PARAMS
from agents.learners import GRIDS, LEARNERS, PONDER_VARIANTS
from agents.report import analyse, write_outputs
from agents.rl import HYPERPARAMETERS
from agents.stages import evaluate_stage, train_rl_stage, train_trm_stage
from trm_env.core import DEFAULT_STEP_COST
from trm_env.io import write_json_atomic
from trm_env.rollouts import shipped_checkpoint
from trm_env.training import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RL_DEFAULTS = dict(algo="ppo", total_timesteps=100_000, n_envs=16, hyperparameters={})
CONFIGS: dict[str, dict[str, Any]] = {
    "quick": dict(tasks=["sp500", "regime-chain"], trm_seeds=[0, 1, 2], retrain=False, step_costs=[DEFAULT_STEP_COST],
                  rl_seeds=[0], random_seeds=[0], learner_seeds=[0], learners=list(LEARNERS),
                  eval_step_cost=DEFAULT_STEP_COST, n_resamples=1000, **RL_DEFAULTS),
    "full": dict(tasks=["sp500", "regime-chain"], trm_seeds=[0, 1, 2], retrain=False, step_costs=[0.005, 0.01, 0.02],
                 rl_seeds=[0, 1, 2], random_seeds=[0, 1, 2], learner_seeds=[0, 1, 2], learners=list(LEARNERS),
                 eval_step_cost=DEFAULT_STEP_COST, n_resamples=2000, **{**RL_DEFAULTS, "total_timesteps": 300_000}),
}  # fmt: skip
CHECKED = {"step_costs": "a non-empty list of numbers >= 0", "trm_seeds": "a non-empty list of integers",
           "rl_seeds": "a non-empty list of integers", "random_seeds": "a non-empty list of integers",
           "learner_seeds": "a non-empty list of integers"}  # fmt: skip


def load_config(name_or_path: str, retrain: bool) -> dict[str, Any]:
    """A named config (``quick``/``full``) or a JSON file overriding the quick one; refused before any work."""
    if name_or_path in CONFIGS:
        config = dict(CONFIGS[name_or_path], name=name_or_path)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"--config must be one of {sorted(CONFIGS)} or a JSON file; got {name_or_path!r}")
        overrides = json.loads(path.read_text())
        unknown = set(overrides) - set(CONFIGS["quick"])
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
        config = {**CONFIGS["quick"], **overrides, "name": path.stem}
    config["retrain"] = bool(config["retrain"] or retrain)
    for key, what in CHECKED.items():
        values = config[key]
        numbers = isinstance(values, list) and values and all(isinstance(v, int | float) and v >= 0 for v in values)
        if not numbers or (key != "step_costs" and not all(isinstance(v, int) for v in values)):
            raise ValueError(f"{key} must be {what}, got {values!r}")
    unknown = sorted(set(config["learners"]) - set(LEARNERS))
    if unknown:
        raise ValueError(f"learners must be a list of {list(LEARNERS)}; unknown: {unknown}")
    if config["algo"] not in HYPERPARAMETERS:
        raise ValueError(f"algo must be one of {sorted(HYPERPARAMETERS)}, got {config['algo']!r}")
    retrain = config["retrain"]
    missing = sorted({t for t in config["tasks"] for s in config["trm_seeds"] if not _source(t, s, retrain).is_file()})
    if not config["tasks"] or missing:
        what = "a training config in experiments/configs" if retrain else "a shipped checkpoint per TRM seed"
        raise ValueError(f"tasks must be a non-empty list of tasks with {what}; {missing or 'none'} lack one")
    return config


def _source(task: str, seed: int, retrain: bool) -> Path:
    return CONFIG_DIR / f"{task}.json" if retrain else shipped_checkpoint(task, seed) / "model.pt"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Run:
    """A run directory: stage keys, atomic artifacts, and the log of what ran.

    Every stage records the key it was made under (the config entries it depends on and the digests
    of its inputs) in ``<artifact>.key.json``, written after the artifact; a stage is redone when its
    key changed or the key file is missing. ``config.json`` is written last, when every stage is done.
    """

    def __init__(self, out: Path, config: dict[str, Any], force: bool) -> None:
        self.out, self.config, self.force = out, config, force
        self.ran: list[str] = []
        recorded = out / "config.json"
        if recorded.is_file() and not force:
            previous = json.loads(recorded.read_text())
            if previous != json.loads(json.dumps(config)):
                raise ValueError(f"{out} holds a run with a different config; use another --out or pass --force")

    def fresh(self, artifact: Path, key: dict[str, Any]) -> bool:
        """Whether ``artifact`` exists and was made under ``key`` (never with ``--force``)."""
        key_file = artifact.with_name(f"{artifact.name}.key.json")
        if self.force or not artifact.exists() or not key_file.is_file():
            return False
        return json.loads(key_file.read_text()) == json.loads(json.dumps(key))

    def stage(self, name: str, artifact: Path, key: dict[str, Any], fn: Any, **kwargs: Any) -> None:
        """Run ``fn(**kwargs)`` unless ``artifact`` is fresh under ``key``; then record the key."""
        if self.fresh(artifact, key):
            return
        fn(**kwargs)
        write_json_atomic(artifact.with_name(f"{artifact.name}.key.json"), key)
        self.ran.append(name)

    def checkpoint(self, task: str, seed: int) -> Path:
        """Stage 1: the TRM folder of ``task`` and ``seed``."""
        if not self.config["retrain"]:
            return shipped_checkpoint(task, seed)
        folder = self.out / "trm" / task / f"seed{seed}"
        config = TrainConfig.from_json(CONFIG_DIR / f"{task}.json")
        config.seed = seed
        self.stage(f"trm/{task}/seed{seed}", folder / "model.pt", {"stage": "trm", "train": asdict(config)},
                   train_trm_stage, task=task, seed=seed, config_path=CONFIG_DIR / f"{task}.json", out_dir=folder)
        return folder

    def rl_agents(self, task: str, seed: int, checkpoint: Path) -> list[Path]:
        """Stage 2: one agent per RL training cost and RL seed, trained on the halt split."""
        c = self.config
        settings = {k: c[k] for k in ("algo", "total_timesteps", "n_envs", "hyperparameters")}
        paths = []
        for cost in c["step_costs"]:
            for rl_seed in c["rl_seeds"]:
                path = self.out / "rl" / task / f"trm{seed}" / f"{c['algo']}_cost{cost:g}_seed{rl_seed}.zip"
                key = {"stage": "rl", "task": task, "checkpoint": sha256_file(checkpoint / "model.pt"), "cost": cost,
                       "seed": rl_seed, **settings, "defaults": HYPERPARAMETERS[c["algo"]]}  # fmt: skip
                self.stage(f"rl/{task}/trm{seed}/{path.stem}", path, key, train_rl_stage, task=task,
                           checkpoint=checkpoint, step_cost=cost, seed=rl_seed, settings=settings, out=path,
                           tensorboard=self.out / "tensorboard")  # fmt: skip
                paths.append(path)
        return paths

    def evaluations(self, task: str, seed: int, checkpoint: Path, agents: list[Path]) -> dict[str, Path]:
        """Stage 3: every policy group's halting steps on val and test."""
        c = self.config
        settings = {"step_cost": c["eval_step_cost"], "random_seeds": c["random_seeds"],
                    "learner_seeds": c["learner_seeds"]}  # fmt: skip
        out = {}
        for group in ("rules", "rl", *c["learners"]):
            path = self.out / "episodes" / task / f"trm{seed}" / f"{group}.npz"
            key = {"stage": "evaluate", "group": group, "checkpoint": sha256_file(checkpoint / "model.pt"),
                   "settings": settings, "grids": {"rules": DEFAULT_PARAMS, "learners": GRIDS,
                                                   "ponder_variants": PONDER_VARIANTS},
                   "rl": [sha256_file(p) for p in agents] if group == "rl" else []}  # fmt: skip
            self.stage(f"episodes/{task}/trm{seed}/{group}", path, key, evaluate_stage, task=task,
                       checkpoint=checkpoint, group=group, settings=settings, out=path,
                       rl_paths=agents if group == "rl" else ())  # fmt: skip
            out[group] = path
        return out

    def finish(self) -> None:
        write_json_atomic(self.out / "config.json", self.config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quick", help="quick (default), full, or a JSON file of overrides")
    parser.add_argument("--out", type=Path, help="run directory (default runs/<config name>)")
    parser.add_argument("--retrain", action="store_true", help="train the TRMs instead of using shipped checkpoints")
    parser.add_argument("--force", action="store_true", help="redo every stage (and accept a changed config)")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.retrain)
    run = Run(args.out or Path("runs") / config["name"], config, args.force)
    start = time.perf_counter()
    artifacts: dict[str, dict[int, dict[str, Path]]] = {}
    agents: dict[str, dict[int, list[Path]]] = {}
    for task in config["tasks"]:
        for seed in config["trm_seeds"]:
            checkpoint = run.checkpoint(task, seed)
            agents.setdefault(task, {})[seed] = run.rl_agents(task, seed, checkpoint)
            artifacts.setdefault(task, {})[seed] = {"checkpoint": checkpoint,
                                                    **run.evaluations(task, seed, checkpoint, agents[task][seed])}
    analysis = analyse(artifacts, agents, config)
    write_outputs(run.out, analysis, config)
    run.finish()
    print(f"\nrun directory: {run.out}  (stages run now: {len(run.ran)}; {time.perf_counter() - start:.1f} s)")
    print(analysis.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
