"""Fitted-Q's per-step regressors: the candidate set, its features, and fast batched prediction.

``REGRESSORS`` maps a name to a ``Regressor``: a scikit-learn factory and whether it sees the class
probabilities sorted in descending order (``sorted_probabilities``: the probability columns replaced in
place, so the model sees "the top class's probability, the runner-up's, ..." whatever the classes are;
replacing measured better than appending on regime-chain and pointer val). The candidates:

- ``ridge``: ridge on the standardised summary observation, its penalty chosen per step by RidgeCV's
  leave-one-out (the original reference);
- ``ridge_sorted``: the same on sorted probabilities;
- ``hgb_sorted``: ``HistGradientBoostingRegressor`` on sorted probabilities, kept small (at most 15 trees
  of depth 3, learning rate 0.3, early stopping on a fixed 10% of the fitting rows, ``random_state=0``):
  the best of seven settings on pointer val for TRM seeds 0-2, and cheap to predict live.

``compile_steps(models)`` turns the K-1 fitted step models into one predictor that scores a batch whose
rows stand at mixed steps in a few numpy operations (live halting calls it once per engine step):
linear models (a ``StandardScaler`` + linear pipeline or a bare linear model) fold the scaler into one
weight vector per step, equal to scikit-learn's prediction up to float rounding; histogram gradient
boosting walks every tree of each row's step at once, bit-identical to scikit-learn's prediction; any
other regressor falls back to one ``predict`` call per step group. Every row's value depends on that row
alone, never on the rest of the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["REGRESSORS", "Regressor", "StepPredictor", "compile_steps", "sorted_probabilities"]


def _ridge() -> Any:
    from sklearn.linear_model import RidgeCV  # imported here: an RL-only worker need not pay 1.5 s for sklearn
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))


def _hgb() -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=15, max_depth=3, learning_rate=0.3, early_stopping=True,
                                         random_state=0)  # fmt: skip


@dataclass(frozen=True)
class Regressor:
    """A named per-step regressor: ``make()`` builds an unfitted scikit-learn estimator."""

    name: str
    make: Callable[[], Any]
    sorted_probs: bool = False


REGRESSORS = {r.name: r for r in (Regressor("ridge", _ridge), Regressor("ridge_sorted", _ridge, True),
                                  Regressor("hgb_sorted", _hgb, True))}  # fmt: skip


def sorted_probabilities(observations: np.ndarray, probs: slice) -> np.ndarray:
    """A float64 copy of ``observations`` (..., D) with the columns ``probs`` sorted in descending order."""
    out = np.array(observations, dtype=np.float64)
    out[..., probs] = np.sort(observations[..., probs], axis=-1)[..., ::-1]
    return out


class StepPredictor:
    """Predicts, for each row, the model of that row's step: ``predict(x (B, D) float64, index (B,))``, where
    ``index`` is the 0-based step (0..K-2)."""

    def predict(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _LinearSteps(StepPredictor):
    def __init__(self, weights: np.ndarray, biases: np.ndarray) -> None:
        self.weights, self.biases = weights, biases

    def predict(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        return (x * self.weights[index]).sum(axis=1) + self.biases[index]


class _TreeSteps(StepPredictor):
    """Every step's trees packed into flat node arrays; leaves loop onto themselves, so ``depth`` rounds of
    "go to child 2 * node + (x > threshold)" land every (row, tree) on its leaf."""

    def __init__(self, models: Sequence[Any]) -> None:
        trees = [[predictor.nodes for (predictor,) in model._predictors] for model in models]
        width = max(len(step) for step in trees)
        features, thresholds, children, values, roots, start = [], [], [], [], [], 0
        for step in trees:
            roots.append([])
            for nodes in step:
                leaf, own = nodes["is_leaf"].astype(bool), np.arange(len(nodes)) + start
                features.append(np.where(leaf, 0, nodes["feature_idx"]))
                thresholds.append(np.where(leaf, np.inf, nodes["num_threshold"]))
                children.append(np.stack([np.where(leaf, own, nodes["left"].astype(np.int64) + start),
                                          np.where(leaf, own, nodes["right"].astype(np.int64) + start)], axis=1))
                values.append(np.where(leaf, nodes["value"], 0.0))
                roots[-1].append(start)
                start += len(nodes)
            roots[-1] += [-1] * (width - len(step))  # padding: the zero leaf appended below
        features.append(np.zeros(1, np.intp)), thresholds.append(np.full(1, np.inf))
        children.append(np.full((1, 2), start)), values.append(np.zeros(1))
        self.features, self.thresholds = np.concatenate(features).astype(np.intp), np.concatenate(thresholds)
        self.children, self.values = np.concatenate(children).astype(np.intp).ravel(), np.concatenate(values)
        self.roots = np.where(np.array(roots) < 0, start, roots).astype(np.intp)
        self.baselines = np.array([float(model._baseline_prediction.ravel()[0]) for model in models])
        self.depth = max(int(nodes["depth"].max()) for step in trees for nodes in step)

    def predict(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        node = np.take(self.roots, index, axis=0)  # (B, trees)
        flat, row_start = np.ascontiguousarray(x, dtype=np.float64).ravel(), (np.arange(len(x)) * x.shape[1])[:, None]
        for _ in range(self.depth):
            right = np.take(flat, row_start + np.take(self.features, node)) > np.take(self.thresholds, node)
            node = np.take(self.children, 2 * node + right)
        # scikit-learn adds the baseline, then each tree in order: the same float sums, in the same order
        terms = np.concatenate([self.baselines[index][:, None], np.take(self.values, node)], axis=1)
        return np.cumsum(terms, axis=1)[:, -1]


class _EachStep(StepPredictor):
    def __init__(self, models: Sequence[Any]) -> None:
        self.models = list(models)

    def predict(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for step in np.unique(index):
            rows = index == step
            out[rows] = self.models[step].predict(x[rows])
        return out


def _linear(model: Any) -> tuple[np.ndarray, float] | None:
    """(w, b) with model.predict(x) == x @ w + b, for a bare linear model or a StandardScaler + linear pipeline."""
    from sklearn.linear_model._base import LinearModel
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    *scalers, last = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    if len(scalers) > 1 or not all(isinstance(s, StandardScaler) for s in scalers) or not isinstance(last, LinearModel):
        return None
    weights, bias = np.asarray(last.coef_, dtype=np.float64), float(np.ravel(last.intercept_)[0])
    if weights.ndim != 1:
        return None
    for scaler in scalers:  # ((x - mean) / scale) @ w + b == x @ (w / scale) + b - (mean / scale) @ w
        if scaler.with_std:
            weights = weights / scaler.scale_
        if scaler.with_mean:
            bias -= float((scaler.mean_ * weights).sum())
    return weights, bias


def compile_steps(models: Sequence[Any], probe: np.ndarray) -> StepPredictor:
    """One batched predictor for the K-1 fitted step models (see the module docstring).

    ``probe`` (N, K-1, D): rows to check it on, for each step; where the compiled form disagrees with the
    models' own ``predict`` there (beyond float rounding for linear models, at all for trees), it warns
    and is not used: the step models predict themselves, one call per step group."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    linear = [_linear(model) for model in models]
    if all(found is not None for found in linear):
        compiled: StepPredictor = _LinearSteps(np.stack([w for w, _ in linear]), np.array([b for _, b in linear]))
        tolerance = 1e-9
    elif all(isinstance(m, HistGradientBoostingRegressor) and m.loss == "squared_error" and m.is_categorical_ is None
             for m in models):  # fmt: skip
        compiled, tolerance = _TreeSteps(models), 0.0
    else:
        return _EachStep(models)
    fallback = _EachStep(models)
    x = probe.reshape(-1, probe.shape[-1])
    index = np.tile(np.arange(probe.shape[1]), probe.shape[0])
    expected = fallback.predict(x, index)
    found = compiled.predict(x, index)
    if (np.abs(found - expected) <= tolerance * np.maximum(1.0, np.abs(expected))).all():
        return compiled
    warnings.warn(f"{type(compiled).__name__} disagrees with scikit-learn's predict on the fitting rows; fitted-Q "
                  "predicts with one scikit-learn call per step group instead (slower live)", stacklevel=2)  # fmt: skip
    return fallback
