"""``rumor``: a fixed-input task where more recursion steps buy more computation, not more input.

Story: a rumor starts at one trader and spreads along the links of a small network, one hop per round.
Which trader hears it last? Each sample is a tree on ``nodes`` traders (its links, as the upper triangle
of the adjacency matrix, and the source as a one-hot: the whole input, seen at every step). The label
(one of ``nodes`` classes) is the trader farthest from the source, unique by construction; the
difficulty d is that distance. Answering means a breadth-first search of d rounds, and one recursion
step has room for about one or two rounds, so harder samples need more steps; the best guess after t
rounds (a trader not reached yet) is itself the state the next round needs.

Generation: a path source = v_0 - v_1 - ... - v_d = label, then the other ``nodes - 1 - d`` traders
hang off random traders at depth <= d - 2 (so no one else reaches depth d), and the trader ids are
shuffled. d is uniform in 2..``max_depth`` (``max_depth <= nodes - 3`` keeps at least two other
leaves, so "the other end of a path" is never a shortcut).

Pnl, as in ``regime-chain``: the right class earns ``+s``, every other class loses ``-s * U(0.2, 1)``,
with ``s = scale * exp(0.5 * N(0, 1))``. Splits by sample index (train/halt/val/test = 55/20/10/15%).
``extrapolate=True`` draws the difficulties of train, halt and val from 2..``cut`` and those of test
from ``cut + 1``..``max_depth`` (PonderNet's extrapolation split: train on easier, test on harder).
The privileged rule ``at_difficulty`` (``Task.reference_steps``) halts at step ceil(d / 2).
"""

from __future__ import annotations

import numpy as np

from trm_env.checks import check_int
from trm_env.task import Task, split_by_fractions, standardise

__all__ = ["NAME", "load_rumor"]

NAME = "rumor"
FRACTIONS = (0.55, 0.2, 0.1, 0.15)


def _tree(rng: np.random.Generator, nodes: int, depth: int) -> tuple[np.ndarray, int, int]:
    """(adjacency (nodes, nodes), source, label) of one sample whose unique deepest trader is at ``depth``."""
    parent = np.full(nodes, -1)
    level = np.zeros(nodes, dtype=int)
    level[: depth + 1] = np.arange(depth + 1)
    parent[1 : depth + 1] = np.arange(depth)
    for node in range(depth + 1, nodes):
        low = np.flatnonzero(level[:node] <= depth - 2)
        parent[node] = rng.choice(low)
        level[node] = level[parent[node]] + 1
    ids = rng.permutation(nodes)
    adjacency = np.zeros((nodes, nodes), dtype=np.float32)
    children = np.arange(1, nodes)
    adjacency[ids[children], ids[parent[children]]] = adjacency[ids[parent[children]], ids[children]] = 1.0
    return adjacency, int(ids[0]), int(ids[depth])


def load_rumor(
    n: int = 40_000,
    seed: int = 0,
    nodes: int = 10,
    max_depth: int = 7,
    scale: float = 0.02,
    extrapolate: bool = False,
    cut: int = 4,
) -> Task:
    """Build the rumor task deterministically from ``seed`` (see the module docstring)."""
    n = check_int("n", n, minimum=40)
    nodes = check_int("nodes", nodes, minimum=5)
    max_depth = check_int("max_depth", max_depth, minimum=3, maximum=nodes - 3)
    cut = check_int("cut", cut, minimum=2, maximum=max_depth - 1)
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    splits = split_by_fractions(n, FRACTIONS)
    depth = rng.integers(2, max_depth + 1, size=n)
    if extrapolate:
        easy, hard = rng.integers(2, cut + 1, size=n), rng.integers(cut + 1, max_depth + 1, size=n)
        depth = np.where(np.isin(np.arange(n), splits["test"]), hard, easy)
    upper = np.triu_indices(nodes, k=1)
    features = np.zeros((n, len(upper[0]) + nodes), dtype=np.float32)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        adjacency, source, labels[i] = _tree(rng, nodes, int(depth[i]))
        features[i, : len(upper[0])] = adjacency[upper]
        features[i, len(upper[0]) + source] = 1.0
    size = scale * np.exp(0.5 * rng.standard_normal(n))
    pnl_matrix = -size[:, None] * rng.uniform(0.2, 1.0, size=(n, nodes))
    pnl_matrix[np.arange(n), labels] = size
    names = (*(f"link_{a}_{b}" for a, b in zip(*upper, strict=True)), *(f"source_{k}" for k in range(nodes)))
    return Task(
        name=NAME,
        features=standardise(features, splits["train"]),
        labels=labels,
        pnl=pnl_matrix[np.arange(n), labels].astype(np.float32),
        pnl_matrix=pnl_matrix.astype(np.float32),
        dates=np.arange(n, dtype=np.int64),
        splits=splits,
        strategy_names=tuple(f"trader_{k}" for k in range(nodes)),
        feature_names=names,
        difficulty=depth.astype(np.int64),
        reference_steps={"at_difficulty": ((depth + 1) // 2).astype(np.int64)},
        params=dict(n=n, seed=seed, nodes=nodes, max_depth=max_depth, scale=scale, extrapolate=extrapolate, cut=cut),
    )
