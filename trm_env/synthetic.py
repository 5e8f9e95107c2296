"""``regime-chain``: a synthetic strategy-selection task where more recursion steps provably help.

Story: a market moves through regimes, and each regime has one strategy that pays. Analysts file
one report per step. Report t holds a noisy one-hot vote for a regime (8 channels) and a noisy
"final" flag (1 channel). For a sample of difficulty d (uniform in 1..max_difficulty):

- reports 1..d-1 are *preliminary*: each votes for the true regime with probability ``hint``,
  otherwise for a uniformly random regime;
- report d carries the true regime and the final flag;
- reports d+1..n_chunks are *silent*: no vote and no flag (all zeros), only the Gaussian noise that
  every report carries; a model that has seen the final report must keep its answer through them.

The reports are the stream input: recursion step t sees report t only (``Task.n_chunks``), so the
answer cannot be known for sure before step d, evidence accumulates across steps, and the model has to keep
what it found. Harder samples (larger d) need more steps; thinking past step d gains nothing.

Pnl: the paying strategy earns ``+s`` and every other strategy loses ``-s * u_j``, with a per-sample
size ``s = scale * exp(0.5 * N(0, 1))`` and ``u_j ~ U(0.2, 1)``, so the same profit-weighted loss
applies. Labels are the argmax of the pnl matrix (the true regime). Splits are by sample index
(train/halt/val/test = 55/20/10/15%; the samples are i.i.d., so no embargo is needed).

What it tests: when to stop *gathering evidence*. Thinking past step d gains nothing, so two
privileged rules (``Task.reference_steps``) bound what reading the input could give: ``at_difficulty``
halts right after step d (it knows d), ``final_flag`` halts at the first report whose noisy final flag
reads above 0.5 (it reads the input, which no halting policy sees).
"""

from __future__ import annotations

import numpy as np

from trm_env.checks import check_int
from trm_env.task import Task, split_by_fractions, standardise

__all__ = ["NAME", "load_regime_chain"]

NAME = "regime-chain"
STRATEGIES = tuple(f"regime_{k}" for k in range(8))


def load_regime_chain(
    n: int = 16_000,
    seed: int = 0,
    n_chunks: int = 16,
    max_difficulty: int = 8,
    hint: float = 0.3,
    noise: float = 0.2,
    scale: float = 0.02,
) -> Task:
    """Build the regime-chain task deterministically from ``seed`` (see the module docstring)."""
    n = check_int("n", n, minimum=30)
    n_chunks = check_int("n_chunks", n_chunks)
    max_difficulty = check_int("max_difficulty", max_difficulty)
    if max_difficulty > n_chunks:
        raise ValueError(f"max_difficulty ({max_difficulty}) must be <= n_chunks ({n_chunks})")
    if not 0.0 <= hint <= 1.0:
        raise ValueError(f"hint must lie in [0, 1], got {hint}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    classes = len(STRATEGIES)
    regime = rng.integers(0, classes, size=n)
    difficulty = rng.integers(1, max_difficulty + 1, size=n)

    step = np.arange(1, n_chunks + 1)[None, :]
    final = step == difficulty[:, None]
    hinted = (step < difficulty[:, None]) & (rng.random((n, n_chunks)) < hint)
    votes = np.where(final | hinted, regime[:, None], rng.integers(0, classes, size=(n, n_chunks)))
    chunks = np.zeros((n, n_chunks, classes + 1))
    chunks[..., :classes] = np.eye(classes)[votes] * (step <= difficulty[:, None])[..., None]
    chunks[..., classes] = final
    chunks += noise * rng.standard_normal(chunks.shape)

    size = scale * np.exp(0.5 * rng.standard_normal(n))
    pnl_matrix = -size[:, None] * rng.uniform(0.2, 1.0, size=(n, classes))
    pnl_matrix[np.arange(n), regime] = size

    splits = split_by_fractions(n)
    flag_seen = chunks[..., classes] > 0.5
    features = standardise(chunks.reshape(n, -1), splits["train"])
    names = tuple(
        f"report{t + 1}_{'final' if c == classes else f'vote{c}'}"
        for t in range(n_chunks)
        for c in range(classes + 1)
    )
    labels = regime.astype(np.int64)
    return Task(
        name=NAME,
        features=features,
        labels=labels,
        pnl=pnl_matrix[np.arange(n), labels].astype(np.float32),
        pnl_matrix=pnl_matrix.astype(np.float32),
        dates=np.arange(n, dtype=np.int64),
        splits=splits,
        strategy_names=STRATEGIES,
        feature_names=names,
        difficulty=difficulty.astype(np.int64),
        n_chunks=n_chunks,
        chunk_dim=classes + 1,
        reference_steps={"at_difficulty": difficulty.astype(np.int64),
                         "final_flag": np.where(flag_seen.any(1), flag_seen.argmax(1) + 1, n_chunks).astype(np.int64)},
        params=dict(
            n=n, seed=seed, n_chunks=n_chunks, max_difficulty=max_difficulty, hint=hint, noise=noise, scale=scale
        ),
    )
