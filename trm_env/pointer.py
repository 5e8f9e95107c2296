"""``pointer``: a fixed-input task where more recursion steps buy more computation, not more input.

Story: ``nodes`` desks sit on a ring and pass an order along it. Desk i hands it on to desk i+1 or to
desk i+2 (mod ``nodes``), as its own bit says. The order starts at one desk and is handed on h times:
which desk holds it at the end? Each sample draws its bits, start and h afresh. The input is the
whole question, seen at every step (``Task.n_chunks == 0``): the ``nodes`` bits, the start as a
one-hot and h as a number. The label (one of ``nodes`` classes) is the final desk. The difficulty is
h, uniform in 1..``max_hops``.

Answering means following the pointer h times. With the narrow model of
``experiments/configs/pointer.json`` (width 96, one latent), one recursion step follows only a few hops
reliably, so harder samples need more steps. This is the setting of the parity experiments of ACT and
PonderNet: per-step capacity is bounded and the computation must grow with difficulty.
``docs/thinking_task.md`` gives the per-step curves of this design and of the designs that stayed
flat (parity, a rumor spreading through a tree, a random-function pointer).

Pnl, as in ``regime-chain``: the right class earns ``+s``, every other class loses ``-s * U(0.2, 1)``,
with ``s = scale * exp(0.5 * N(0, 1))``. Splits are by sample index (train/halt/val/test =
55/20/10/15%). The samples are i.i.d., so no embargo is needed.

``extrapolate=True`` (the task ``pointer-extrapolate``) draws h of train, halt and val from 1..``cut``
and h of test from ``cut + 1``..``max_hops``: PonderNet's extrapolation split, train on easier and
test on harder. The privileged rule ``at_difficulty`` (``Task.reference_steps``) halts at step
ceil(h / 4) + 1, about where the shipped models' accuracy stops rising.
"""

from __future__ import annotations

import numpy as np

from trm_env.checks import check_int
from trm_env.task import Task, split_by_fractions, standardise

__all__ = ["EXTRAPOLATE", "NAME", "load_pointer", "load_pointer_extrapolate"]

NAME = "pointer"
EXTRAPOLATE = "pointer-extrapolate"


def load_pointer(
    n: int = 100_000,
    seed: int = 0,
    nodes: int = 16,
    max_hops: int = 16,
    scale: float = 0.02,
    extrapolate: bool = False,
    cut: int = 12,
) -> Task:
    """Build the pointer task deterministically from ``seed`` (see the module docstring)."""
    n = check_int("n", n, minimum=40)
    nodes = check_int("nodes", nodes, minimum=3)
    max_hops = check_int("max_hops", max_hops, minimum=2)
    cut = check_int("cut", cut, minimum=1, maximum=max_hops - 1) if extrapolate else cut
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    splits = split_by_fractions(n)
    bits = rng.integers(0, 2, size=(n, nodes))
    start = rng.integers(0, nodes, size=n)
    hops = rng.integers(1, max_hops + 1, size=n)
    if extrapolate:
        hard = np.isin(rows, splits["test"])
        hops = np.where(hard, rng.integers(cut + 1, max_hops + 1, size=n), rng.integers(1, cut + 1, size=n))
    target = (np.arange(nodes)[None, :] + 1 + bits) % nodes
    desk = start.copy()
    for hop in range(1, max_hops + 1):
        desk = np.where(hops >= hop, target[rows, desk], desk)
    features = np.concatenate([bits, np.eye(nodes)[start], hops[:, None]], axis=1).astype(np.float64)
    size = scale * np.exp(0.5 * rng.standard_normal(n))
    pnl_matrix = -size[:, None] * rng.uniform(0.2, 1.0, size=(n, nodes))
    pnl_matrix[rows, desk] = size
    names = (*(f"bit_{k}" for k in range(nodes)), *(f"start_{k}" for k in range(nodes)), "hops")
    return Task(
        name=EXTRAPOLATE if extrapolate else NAME,
        features=standardise(features, splits["train"]),
        labels=desk.astype(np.int64),
        pnl=pnl_matrix[rows, desk].astype(np.float32),
        pnl_matrix=pnl_matrix.astype(np.float32),
        dates=rows.astype(np.int64),
        splits=splits,
        strategy_names=tuple(f"desk_{k}" for k in range(nodes)),
        feature_names=names,
        difficulty=hops.astype(np.int64),
        reference_steps={"at_difficulty": (-(-hops // 4) + 1).astype(np.int64)},
        params=dict(n=n, seed=seed, nodes=nodes, max_hops=max_hops, scale=scale, extrapolate=extrapolate, cut=cut),
    )


def load_pointer_extrapolate(**overrides: object) -> Task:
    """The extrapolation variant: ``load_pointer(extrapolate=True, ...)``."""
    return load_pointer(**{"extrapolate": True, **overrides})
