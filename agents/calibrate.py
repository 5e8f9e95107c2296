"""Exits with a guarantee: Learn-then-Test (Angelopoulos et al. 2021; CALM's calibration) over a threshold family.

Given a family's candidate exits ordered from the latest-halting (most conservative) to the earliest, a risk,
α, δ and a calibration table (the study calibrates on ``val``; ``test`` stays untouched):

1. per candidate, each calibration sample's loss in [0, 1] (``risk_losses``);
2. per candidate, the Hoeffding–Bentkus p-value of "the risk exceeds α" from its empirical risk
   (MAPIE's ``compute_hoeffding_bentkus_p_value``; the tighter binary form for 0/1 losses);
3. family-wise error control at δ (MAPIE's ``control_fwer``; by default fixed-sequence testing in the given
   order, which stops at the first candidate that fails; MAPIE's ``ltt_procedure`` would reorder by the
   calibration risks, so the order here is fixed before the data are seen);
4. of the candidates that pass, the one with the fewest mean steps on the calibration table.

**The guarantee**: if calibration and deployment samples are exchangeable, then with probability at least 1 - δ
over the calibration draw every candidate that passes, so the chosen one, has risk at most α. When none passes
that is the result (``Calibration.found`` is False): halt at full depth, whose risk is 0 by each risk's definition.

Risks of halting at step s instead of at the full depth K, per sample:

- ``accuracy_drop``: 1 where the answer at K is correct and the answer at s is not;
- ``disagreement``: 1 where the answer at s differs from the answer at K (CALM's consistency);
- ``excess_loss``: clip(L_s - L_K, 0, B) / B, L the profit-weighted CE and B the stated ``bound`` (default
  ``EXCESS_BOUND`` nats): it controls E[clip(L_s - L_K, 0, B)] <= α B.

**Exchangeability** (``exchangeability``) fails on market tables: their samples are consecutive days, val
precedes test in time, and with a label horizon h > 1 neighbouring labels overlap. ``thin=h`` calibrates on
every h-th sample, whose labels do not overlap: that removes the overlap inside the calibration set, not the
serial dependence of returns nor the shift from val's years to test's, so no guarantee follows from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.evaluation import halting_steps
from agents.policies import HaltingPolicy
from trm_env.core import DEFAULT_STEP_COST
from trm_env.rollouts import Rollouts

__all__ = ["EXCESS_BOUND", "FWER_METHODS", "RISKS", "Calibration", "calibrate", "calibrate_steps",
           "conservative_first", "exchangeability", "ltt", "resplit_coverage", "risk_losses"]  # fmt: skip

RISKS = {"accuracy_drop": True, "disagreement": True, "excess_loss": False}  # risk -> its losses are 0/1
FWER_METHODS = ("fixed_sequence", "bonferroni_holm", "bonferroni")
EXCESS_BOUND = 1.0  # nats of profit-weighted CE: excess_loss is clipped to [0, B] and divided by B
# threshold families: does a higher knob halt later? (fitted-Q halts where its advantage <= margin: earlier)
HIGHER_HALTS_LATER = {"halt_head": True, "confidence": True, "correct_head": True, "continuation_head": True,
                      "ponder": True, "fitted_q": False, "kl_exit": False, "entropy_exit": False}  # fmt: skip


@dataclass(frozen=True)
class Calibration:
    """The outcome of Learn-then-Test over candidates in testing order (most conservative first)."""

    params: np.ndarray  # (P,) each candidate's knob
    risk: str
    alpha: float
    delta: float
    fwer: str
    n: int  # calibration samples
    empirical_risk: np.ndarray  # (P,)
    p_values: np.ndarray  # (P,)
    mean_steps: np.ndarray  # (P,)
    valid: np.ndarray  # indices of the candidates that pass
    index: int | None  # the chosen candidate (fewest mean steps among the valid), None when none passes

    @property
    def found(self) -> bool:
        return self.index is not None

    @property
    def param(self) -> float:
        """The chosen knob; NaN when no candidate passes (halt at full depth)."""
        return float(self.params[self.index]) if self.index is not None else float("nan")

    def describe(self) -> str:
        head = f"{self.risk} <= {self.alpha:g} with probability >= {1 - self.delta:g} ({self.fwer}, n={self.n})"
        if self.index is None:
            return f"{head}: no threshold passes; halt at full depth"
        i = self.index
        return (f"{head}: threshold {self.param:g} (calibration risk {self.empirical_risk[i]:.4f}, p-value "
                f"{self.p_values[i]:.3g}, mean steps {self.mean_steps[i]:.2f}; {len(self.valid)} of "
                f"{len(self.params)} pass)")  # fmt: skip


def conservative_first(family: str, params: Sequence[float]) -> np.ndarray:
    """Indices of a threshold family's ``params`` from the latest-halting knob to the earliest (an order fixed
    before any data, as fixed-sequence testing needs)."""
    if family not in HIGHER_HALTS_LATER:
        raise ValueError(f"family must be a threshold family {sorted(HIGHER_HALTS_LATER)}, got {family!r}")
    order = np.argsort(np.asarray(params, dtype=float), kind="stable")
    return order[::-1] if HIGHER_HALTS_LATER[family] else order


def _check_level(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def _check_losses(losses: np.ndarray, binary: bool) -> np.ndarray:
    losses = np.asarray(losses, dtype=float)
    if losses.ndim != 2 or losses.size == 0 or not ((losses >= 0) & (losses <= 1)).all():
        raise ValueError(f"losses must be a non-empty (candidates, samples) array in [0, 1], got shape {losses.shape}")
    if binary and not np.isin(losses, (0.0, 1.0)).all():
        raise ValueError("binary=True needs 0/1 losses")
    return losses


def ltt(losses: np.ndarray, mean_steps: np.ndarray, alpha: float, delta: float, params: Sequence[float] | None = None,
        binary: bool = False, fwer: str = "fixed_sequence", risk: str = "custom") -> Calibration:  # fmt: skip
    """Learn-then-Test on (P, N) calibration ``losses`` in [0, 1] of P candidates in testing order.

    ``mean_steps`` (P,) ranks the valid candidates (fewest wins); ``binary`` uses the tighter p-value for 0/1
    losses (``ValueError`` if they are not); ``fwer`` is one of ``FWER_METHODS``.
    """
    losses = _check_losses(losses, binary)
    return _decide(losses.mean(axis=1), losses.shape[1], mean_steps, alpha, delta, params, binary, fwer, risk)


def _decide(empirical: np.ndarray, n: int, mean_steps: np.ndarray, alpha: float, delta: float,
            params: Sequence[float] | None, binary: bool, fwer: str, risk: str) -> Calibration:  # fmt: skip
    """``ltt`` from the candidates' empirical risks over n calibration samples."""
    from mapie.risk_control import control_fwer  # imported here: mapie pulls in scikit-learn (1.5 s)
    from mapie.risk_control.methods import compute_hoeffding_bentkus_p_value

    alpha, delta = _check_level("alpha", alpha), _check_level("delta", delta)
    mean_steps = np.asarray(mean_steps, dtype=float)
    params = np.arange(len(empirical), dtype=float) if params is None else np.asarray(params, dtype=float)
    if mean_steps.shape != (len(empirical),) or params.shape != (len(empirical),):
        raise ValueError(f"mean_steps and params must hold one value per candidate ({len(empirical)})")
    if fwer not in FWER_METHODS:
        raise ValueError(f"fwer must be one of {FWER_METHODS}, got {fwer!r}")
    p_values = compute_hoeffding_bentkus_p_value(empirical, n, alpha, binary=binary)[:, 0]
    valid = np.asarray(control_fwer(p_values, delta, fwer_method=fwer), dtype=np.int64)
    index = int(valid[np.argmin(mean_steps[valid])]) if len(valid) else None
    return Calibration(params, risk, alpha, delta, fwer, n, empirical, p_values, mean_steps, valid, index)


def _check_steps(steps: np.ndarray, table: Rollouts) -> np.ndarray:
    steps = np.asarray(steps)
    steps = steps[None] if steps.ndim == 1 else steps
    if steps.ndim != 2 or steps.shape[1] != table.num_samples or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"steps must be integer (candidates, {table.num_samples}) halting steps, got {steps.shape}")
    if steps.size and (steps.min() < 1 or steps.max() > table.max_steps):
        raise ValueError(f"steps must lie in 1..{table.max_steps}")
    return steps


def risk_losses(table: Rollouts, steps: np.ndarray, risk: str = "accuracy_drop", bound: float = EXCESS_BOUND
                ) -> np.ndarray:  # fmt: skip
    """(P, N) losses in [0, 1] of halting each sample at ``steps`` (P, N) (or (N,)) instead of at full depth."""
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {sorted(RISKS)}, got {risk!r}")
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not bound > 0:
        raise ValueError(f"bound must be a number > 0, got {bound!r}")
    steps = _check_steps(steps, table)
    rows, last = np.arange(table.num_samples), table.max_steps - 1
    at = steps - 1
    if risk == "accuracy_drop":
        return (table.correct[:, last][None] & ~table.correct[rows, at]).astype(float)
    if risk == "disagreement":
        return (table.prediction[rows, at] != table.prediction[:, last][None]).astype(float)
    excess = table.profit_weighted_ce[rows, at] - table.profit_weighted_ce[:, last][None]
    return np.clip(excess, 0.0, bound) / bound


def exchangeability(table: Rollouts) -> str | None:
    """Why Learn-then-Test's guarantee fails on ``table``'s samples, or None where they are i.i.d. draws."""
    if table.date is None and table.horizon == 1:
        return None
    overlap = f"; each label spans {table.horizon} days, so neighbouring labels overlap" if table.horizon > 1 else ""
    return f"its samples are consecutive market days and val precedes test in time{overlap}"


def calibrate_steps(steps: np.ndarray, table: Rollouts, params: Sequence[float], risk: str = "accuracy_drop",
                    alpha: float = 0.05, delta: float = 0.1, fwer: str = "fixed_sequence", thin: int = 1,
                    bound: float = EXCESS_BOUND) -> Calibration:  # fmt: skip
    """Learn-then-Test over candidates given by their (P, N) halting ``steps`` on the calibration ``table``
    (most conservative first); ``thin`` keeps every thin-th sample (see the module docstring)."""
    if isinstance(thin, bool) or not isinstance(thin, int) or thin < 1:
        raise ValueError(f"thin must be an integer >= 1, got {thin!r}")
    steps = _check_steps(steps, table)
    losses = risk_losses(table, steps, risk, bound)[:, ::thin]
    steps = steps[:, ::thin]
    return ltt(losses, steps.mean(axis=1), alpha, delta, params, RISKS[risk], fwer, risk)


def calibrate(policies: Sequence[HaltingPolicy], table: Rollouts, risk: str = "accuracy_drop", alpha: float = 0.05,
              delta: float = 0.1, step_cost: float = DEFAULT_STEP_COST, fwer: str = "fixed_sequence", thin: int = 1,
              bound: float = EXCESS_BOUND) -> Calibration:  # fmt: skip
    """The exit with the guarantee among ``policies`` (one family's knob points, ordered from the latest-halting
    to the earliest: the order fixed-sequence testing follows), calibrated on ``table`` (val).

    >>> from agents.policies import make_policy
    >>> from trm_env.rollouts import simulate
    >>> val = simulate("regime-chain", split="val")  # doctest: +SKIP
    >>> exits = [make_policy("halt_head", p) for p in (0.99, 0.9, 0.7, 0.5)]  # later-halting first
    >>> calibrate(exits, val, "accuracy_drop", alpha=0.05, delta=0.1).param  # doctest: +SKIP
    """
    if not policies:
        raise ValueError("policies must hold at least one policy")
    steps = np.stack([halting_steps(p, table, step_cost) for p in policies])
    return calibrate_steps(steps, table, [p.param for p in policies], risk, alpha, delta, fwer, thin, bound)


def resplit_coverage(losses: np.ndarray, steps: np.ndarray, max_steps: int, alpha: float, delta: float,
                     n_splits: int = 200, seed: int = 0, binary: bool = False, fwer: str = "fixed_sequence"
                     ) -> dict[str, np.ndarray]:  # fmt: skip
    """Learn-then-Test on a random half of the (P, N) ``losses`` and halting ``steps`` of P candidates (testing
    order), measured on the other half, ``n_splits`` times.

    Returns per split ``found`` (bool), ``index`` (-1: none passes, full depth), the ``holdout_risk`` (0 at full
    depth) and ``holdout_steps`` (``max_steps`` at full depth)."""
    losses, steps = _check_losses(losses, binary), np.asarray(steps, dtype=float)
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"n_splits must be an integer >= 1, got {n_splits!r}")
    if steps.shape != losses.shape or losses.shape[1] < 2:
        raise ValueError(f"losses and steps must share one (candidates, samples >= 2) shape, got {losses.shape} and "
                         f"{steps.shape}")
    rng, n = np.random.default_rng(seed), losses.shape[1]
    half = n // 2
    masks = np.zeros((n_splits, n), dtype=np.float32)  # split i calibrates on the samples where masks[i] is 1
    for i in range(n_splits):
        masks[i, rng.permutation(n)[:half]] = 1.0
    # one float32 product per array (exact for 0/1 losses and integer steps; ten times faster than float64 here)
    sums = {name: ((values.astype(np.float32) @ masks.T).astype(float), values.sum(axis=1))
            for name, values in (("risk", losses), ("steps", steps))}  # fmt: skip
    cal = {name: inside / half for name, (inside, _) in sums.items()}  # (P, n_splits) means on the calibration half
    hold = {name: (total[:, None] - inside) / (n - half) for name, (inside, total) in sums.items()}
    out: dict[str, list[float]] = {"found": [], "index": [], "holdout_risk": [], "holdout_steps": []}
    for i in range(n_splits):
        j = _decide(cal["risk"][:, i], half, cal["steps"][:, i], alpha, delta, None, binary, fwer, "custom").index
        out["found"].append(j is not None)
        out["index"].append(-1 if j is None else j)
        out["holdout_risk"].append(0.0 if j is None else hold["risk"][j, i])
        out["holdout_steps"].append(float(max_steps) if j is None else hold["steps"][j, i])
    return {key: np.asarray(values) for key, values in out.items()}
