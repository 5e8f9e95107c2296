"""Bring your own model, shown on a real one: an early-exit network on scikit-learn's handwritten digits, its per-exit
outputs exported as ``.npz`` files, and the whole halting study run on them.

    python experiments/early_exit_digits.py                   # 3 seeds -> runs/digits/ (results.md, study/report.md)
    python experiments/early_exit_digits.py --quick           # a tiny version (what `make test` runs)

- **Data**: ``sklearn.datasets.load_digits``, 1,797 8x8 images of the digits 0-9 shipped inside scikit-learn.
  Digits have no time order, so the splits are stratified by digit and random (seed 0, the same for every model):
  train 40%, halt 20%, val 20%, test 20% (719/359/360/359 images). Pixels are z-scored with train statistics.
- **Model**: ``EarlyExitMLP``, K blocks of width 8 (``--blocks``, default 8), each reading the previous block and the
  image, with a classifier exit and a halt logit after every block; trained jointly on train (the sum of the exits'
  cross-entropies, plus the BCE of each halt logit, on detached features, toward "this exit's answer is right", as
  a learned exit does), Adam, one torch thread, seeded: 3 seeds, about a second each on a CPU.
- **Export** (the arrays path): per seed and split, ``tables/seed<k>/<split>.npz`` with ``logits`` (N, K, 10),
  ``halt_logits`` (N, K) and ``labels`` (N,), as a user of any early-exit model would save them. The network is a
  stepper too (``initial_state``, ``step``), so ``simulate`` and ``evaluate_live`` take it directly.
- **Study**: ``experiments/run.py`` with a config naming the tables (``study.json``; the models count as TRM
  seeds): every family, knobs chosen on val, reported on test. Reward: -CE (no pnl), step cost 0.01.

``results.md`` gives each family's val-chosen point on test and whether halting pays: the oracle's and fitted-Q's
gains over the val-chosen fixed depth, with 95% CIs over the models; ``timing.json`` the wall times.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

from agents.report import markdown_table
from trm_env.io import atomic_path, write_json_atomic
from trm_env.model import torch_threads
from trm_env.stepping import MIN_ROWS, rollout_steps
from trm_env.task import SPLITS, Task, standardise

FRACTIONS = (0.4, 0.2, 0.2, 0.2)  # of SPLITS: train, halt, val, test
WIDTH, LEARNING_RATE, WEIGHT_DECAY, BATCH = 8, 3e-3, 1e-2, 64
EXPORTED = ("train", "halt", "val", "test")


def stratified_splits(labels: np.ndarray, fractions: tuple[float, ...] = FRACTIONS, seed: int = 0
                      ) -> dict[str, np.ndarray]:  # fmt: skip
    """Per class, a seeded permutation of its samples cut by ``fractions`` into ``SPLITS`` (sorted indices)."""
    rng, parts = np.random.default_rng(seed), {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        edges = np.round(np.cumsum((0.0, *fractions)) * len(members)).astype(int)
        for name, lo, hi in zip(SPLITS, edges[:-1], edges[1:], strict=True):
            parts[name].append(members[lo:hi])
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


def digits_task() -> Task:
    """scikit-learn's digits as a ``Task`` (no pnl: zeros, so the profit weight is 1 and the reward is -CE)."""
    data = load_digits()
    labels = data.target.astype(np.int64)
    splits = stratified_splits(labels)
    n = len(labels)
    return Task(name="digits", features=standardise(data.data.astype(np.float32), splits["train"]), labels=labels,
                pnl=np.zeros(n, np.float32), pnl_matrix=np.zeros((n, 10), np.float32), dates=np.arange(n),
                splits=splits, strategy_names=tuple(str(d) for d in range(10)),
                feature_names=tuple(f"pixel{i}" for i in range(64)))  # fmt: skip


class ExitState(NamedTuple):
    h: Tensor  # (B, WIDTH) the running representation
    x: Tensor  # (B, F) the image, read by every block
    step: Tensor  # (B,) blocks done


class EarlyExitMLP(nn.Module):
    """K blocks ``h <- h + relu(W_t [h, x])``, each followed by a classifier exit and a halt logit; a stepper.

    Rows may stand at different blocks (live halting): ``step`` runs each block on its rows, padded to
    ``MIN_ROWS`` so a row's numbers do not depend on how many rows share its block.
    """

    def __init__(self, inputs: int = 64, classes: int = 10, blocks: int = 8, width: int = WIDTH) -> None:
        super().__init__()
        self.max_steps, self.width = blocks, width
        self.blocks = nn.ModuleList(nn.Linear(width + inputs, width) for _ in range(blocks))
        self.exits = nn.ModuleList(nn.Linear(width, classes) for _ in range(blocks))
        self.halts = nn.ModuleList(nn.Linear(width, 1) for _ in range(blocks))

    def initial_state(self, x: Tensor) -> ExitState:
        return ExitState(x.new_zeros(len(x), self.width), x, torch.zeros(len(x), dtype=torch.long, device=x.device))

    def _block(self, t: int, h: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = h + torch.relu(self.blocks[t](torch.cat([h, x], dim=-1)))
        return h, self.exits[t](h), self.halts[t](h.detach()).squeeze(-1)

    def step(self, state: ExitState) -> tuple[ExitState, Tensor, Tensor]:
        h, logits, halt = torch.empty_like(state.h), None, state.h.new_empty(len(state.h))
        for t in state.step.unique().tolist():
            rows = torch.nonzero(state.step == t)[:, 0]
            padded = torch.cat([rows, rows[:1].expand(max(MIN_ROWS - len(rows), 0))])
            outputs = self._block(t, state.h[padded], state.x[padded])
            new_h, new_logits, new_halt = (part[: len(rows)] for part in outputs)
            logits = new_logits.new_zeros(len(h), new_logits.shape[-1]) if logits is None else logits
            h[rows], logits[rows], halt[rows] = new_h, new_logits, new_halt
        return ExitState(h, state.x, state.step + 1), logits, halt

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every exit at once (training): logits (B, K, C) and halt logits (B, K)."""
        h, logits, halts = x.new_zeros(len(x), self.width), [], []
        for t in range(self.max_steps):
            h, exit_logits, halt = self._block(t, h, x)
            logits.append(exit_logits)
            halts.append(halt)
        return torch.stack(logits, dim=1), torch.stack(halts, dim=1)


def train_network(task: Task, seed: int, blocks: int, epochs: int) -> EarlyExitMLP:
    """Joint training on the train split: sum over exits of CE + BCE of each halt logit toward its exit being right."""
    with torch_threads(1):
        torch.manual_seed(seed)
        net = EarlyExitMLP(task.num_features, task.num_classes, blocks)
        optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        loader = task.loader("train", BATCH, shuffle=True, seed=seed)  # one generator: a new order every epoch
        for features, labels, _ in (batch for _ in range(epochs) for batch in loader):
            logits, halts = net(features)
            targets = labels[:, None].expand(-1, blocks)
            loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(0).sum()
            loss = loss + F.binary_cross_entropy_with_logits(halts, (logits.argmax(-1) == targets).float())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval()


def export_tables(net: EarlyExitMLP, task: Task, folder: Path) -> dict[str, str]:
    """Each split's per-exit outputs as ``folder/<split>.npz`` (logits, halt_logits, labels); split -> path."""
    paths = {}
    with torch_threads(1):
        for split in EXPORTED:
            features, labels, _ = task.tensors(split)
            logits, halt_logits, _ = rollout_steps(net, features, net.max_steps)
            path = folder / f"{split}.npz"
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, logits=logits.numpy(), halt_logits=halt_logits.numpy(), labels=labels.numpy())
            paths[split] = str(path)
    return paths


def study_config(tables: list[dict[str, str]], seeds: list[int], quick: bool, timesteps: int) -> dict[str, Any]:
    """The run.py config of the study on the exported tables (the models are its TRM seeds)."""
    config = {"tasks": ["digits"], "trm_seeds": seeds, "tables": {"digits": tables}, "total_timesteps": timesteps}
    if quick:
        config.update(learners=["fitted_q"], n_envs=8, n_resamples=200, hyperparameters={"batch_size": 64})
    return config


def _run_module() -> Any:
    spec = importlib.util.spec_from_file_location("experiments_run", Path(__file__).resolve().parent / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(row: pd.Series, name: str, percent: bool = False) -> str:
    values = [row[name], row[f"{name}_lo"], row[f"{name}_hi"]]
    fmt = "{:.1%}" if percent else "{:+.4f}"
    if not np.isfinite(values[0]):
        return "n/a"
    bounds = f"[{fmt.format(values[1])}, {fmt.format(values[2])}]" if np.isfinite(values[1:]).all() else "[unbounded]"
    return f"{fmt.format(values[0])} {bounds}"


def results(summary: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The results table (per family: knob, test mean return, gain over the val-chosen fixed depth, shares, all
    with 95% CIs) and the plain answer: does halting pay?"""
    rows = summary.set_index("policy")
    table = pd.DataFrame({
        "family": rows.index, "knob": [f"{v:g}" for v in rows["param"]],
        "test mean return": [_cell(r, "mean_return") for _, r in rows.iterrows()],
        "gain over fixed depth": [_cell(r, "gain") for _, r in rows.iterrows()],
        "share of oracle's gain": [_cell(r, "oracle_gain_share", True) for _, r in rows.iterrows()],
        "share of fitted-Q's gain": [_cell(r, "attainable_gain_share", True) for _, r in rows.iterrows()],
        "accuracy": rows["accuracy"].to_numpy(), "mean steps": rows["mean_steps"].to_numpy(),
    })  # fmt: skip
    depth, oracle, fitted = rows.loc["fixed_depth"], rows.loc["oracle"], rows.loc["fitted_q"]
    pays = ("yes: fitted-Q's gain is significantly above zero" if fitted["gain_lo"] > 0 else
            "no: fitted-Q, the attainable reference, gains nothing significant, though the oracle's per-sample gain "
            "shows there is something to gain" if oracle["gain_lo"] > 0 else "no: not even the oracle gains")
    answer = (f"Does halting pay on digits? {pays}. Over the val-chosen fixed depth (k = {depth['param']:g}, test mean "
              f"return {depth['mean_return']:+.4f}), the oracle gains {_cell(oracle, 'gain')} and fitted-Q (margin "
              f"{fitted['param']:g}, {fitted['mean_steps']:.2f} mean steps) {_cell(fitted, 'gain')} in test mean "
              f"return (95% CIs over the {int(depth['n_trm_seeds'])} models and the samples).")  # fmt: skip
    return table, answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/digits"), help="output folder (default runs/digits)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (default 0 1 2)")
    parser.add_argument("--blocks", type=int, default=8, help="blocks (exits) K, at least 2 (default 8)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    parser.add_argument("--timesteps", type=int, default=100_000, help="PPO timesteps per agent (default 100000)")
    parser.add_argument("--quick", action="store_true", help="tiny: 6 blocks, 3 epochs, fitted-Q only, 512 PPO steps")
    parser.add_argument("--backend", choices=("serial", "ray"), default="serial", help="run.py's backend (serial)")
    args = parser.parse_args(argv)
    if args.quick:
        args.blocks, args.epochs, args.timesteps = 6, 3, 512
    if args.blocks < 2 or args.epochs < 1 or args.timesteps < 1 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--blocks must be >= 2, --epochs and --timesteps >= 1, --seeds distinct")
    task, clock, tables = digits_task(), {"train_s": 0.0, "export_s": 0.0}, []
    for seed in args.seeds:
        start = time.perf_counter()
        net = train_network(task, seed, args.blocks, args.epochs)
        middle = time.perf_counter()
        tables.append(export_tables(net, task, args.out / "tables" / f"seed{seed}"))
        clock["train_s"] += middle - start
        clock["export_s"] += time.perf_counter() - middle
    config = args.out / "study.json"
    write_json_atomic(config, study_config(tables, args.seeds, args.quick, args.timesteps))
    start = time.perf_counter()
    _run_module().main(["--config", str(config), "--out", str(args.out / "study"), "--backend", args.backend])
    clock["study_s"] = time.perf_counter() - start
    table, answer = results(pd.read_csv(args.out / "study" / "summary.csv"))
    timing = ", ".join(f"{name[:-2]} {seconds:.1f} s" for name, seconds in clock.items())
    title = f"# Halting on an early-exit MLP over scikit-learn's digits ({len(args.seeds)} models, K = {args.blocks})"
    text = "\n".join([title, "", markdown_table(table), "", answer, "", f"Wall times: {timing}."])
    with atomic_path(args.out / "results.md") as tmp:
        tmp.write_text(text + "\n")
    write_json_atomic(args.out / "timing.json", {name: round(seconds, 2) for name, seconds in clock.items()})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
