"""Fitted-Q's regressors: sorted-probability features by hand, compiled predictors against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from agents import regressors
from agents.regressors import REGRESSORS, compile_steps, sorted_probabilities

STEPS, D = 5, 6


def test_sorted_probabilities_by_hand() -> None:
    rows = np.array([[0.1, 0.7, 0.2, 9.0, 3.0], [0.5, 0.1, 0.4, -1.0, 2.0]], dtype=np.float32)
    out = sorted_probabilities(rows, slice(0, 3))
    np.testing.assert_array_equal(out, np.array([[0.7, 0.2, 0.1, 9.0, 3.0], [0.5, 0.4, 0.1, -1.0, 2.0]],
                                                dtype=np.float32).astype(np.float64))  # fmt: skip
    assert out.dtype == np.float64 and rows[0, 0] == np.float32(0.1)  # a copy: the input is untouched
    table = np.stack([rows, rows[::-1]])  # (N, K, D) works too
    np.testing.assert_array_equal(sorted_probabilities(table, slice(1, 3))[1, 0], np.float32([0.5, 0.4, 0.1, -1, 2]))


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, STEPS, D) features and (N, STEPS) targets, nonlinear and different per step."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, STEPS, D)) * np.arange(1, D + 1)
    y = np.sin(x[..., 0]) + x[..., 1] * x[..., 2] / 10 + np.arange(STEPS) + rng.normal(size=(400, STEPS)) * 0.1
    return x, y


def _mixed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of every step shuffled together, as live halting sees them, and each row's 0-based step."""
    order = np.random.default_rng(1).permutation(x.shape[0] * x.shape[1])
    return x.reshape(-1, D)[order], np.tile(np.arange(STEPS), x.shape[0])[order]


def _expected(models: list, rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """scikit-learn's own predict, one call per step."""
    out = np.empty(len(rows))
    for step, model in enumerate(models):
        out[index == step] = model.predict(rows[index == step])
    return out


LINEAR = [lambda: make_pipeline(StandardScaler(), RidgeCV()), LinearRegression,
          lambda: make_pipeline(StandardScaler(with_mean=False), LinearRegression())]


@pytest.mark.parametrize("make", LINEAR)
def test_linear_steps_fold_the_scaler_and_equal_sklearn(make) -> None:  # type: ignore[no-untyped-def]
    x, y = _data()
    models = [make().fit(x[:, t], y[:, t]) for t in range(STEPS)]
    compiled = compile_steps(models, x[:50])
    assert type(compiled).__name__ == "_LinearSteps"
    rows, index = _mixed(x)
    np.testing.assert_allclose(compiled.predict(rows, index), _expected(models, rows, index), rtol=1e-12, atol=1e-12)


def test_tree_steps_equal_sklearn_bit_for_bit() -> None:
    """Steps with different numbers of trees (padding), depths, and a step whose trees are single leaves."""
    x, y = _data()
    y[:, 3] = 2.5  # a constant target: no split anywhere
    models = [HistGradientBoostingRegressor(max_iter=2 + 3 * t, max_depth=2 + t % 3, random_state=0)
              .fit(x[:, t], y[:, t]) for t in range(STEPS)]  # fmt: skip
    assert len({len(m._predictors) for m in models}) > 2
    compiled = compile_steps(models, x[:50])
    assert type(compiled).__name__ == "_TreeSteps"
    rows, index = _mixed(x)
    np.testing.assert_array_equal(compiled.predict(rows, index), _expected(models, rows, index))
    single = [compiled.predict(rows[i : i + 1], index[i : i + 1])[0] for i in range(20)]
    np.testing.assert_array_equal(single, compiled.predict(rows[:20], index[:20]))  # no row depends on the batch


def test_other_regressors_predict_per_step_and_a_wrong_compiled_form_is_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    x, y = _data()
    trees = [DecisionTreeRegressor(max_depth=3, random_state=0).fit(x[:, t], y[:, t]) for t in range(STEPS)]
    rows, index = _mixed(x)
    compiled = compile_steps(trees, x[:50])
    assert type(compiled).__name__ == "_EachStep"
    np.testing.assert_array_equal(compiled.predict(rows, index), _expected(trees, rows, index))
    boosted = [REGRESSORS["hgb_sorted"].make().fit(x[:, t], y[:, t]) for t in range(STEPS)]
    monkeypatch.setattr(regressors._TreeSteps, "predict", lambda self, x, index: np.zeros(len(x)))
    with pytest.warns(UserWarning, match="disagrees"):
        fallback = compile_steps(boosted, x[:50])
    np.testing.assert_array_equal(fallback.predict(rows, index), _expected(boosted, rows, index))


def test_the_candidates_and_their_settings() -> None:
    assert list(REGRESSORS) == ["ridge", "ridge_sorted", "hgb_sorted"]
    assert [r.sorted_probs for r in REGRESSORS.values()] == [False, True, True]
    hgb = REGRESSORS["hgb_sorted"].make()
    assert (hgb.max_iter, hgb.max_depth, hgb.learning_rate, hgb.early_stopping, hgb.random_state) == (
        15, 3, 0.3, True, 0)
    x, y = _data()
    first, second = (REGRESSORS["hgb_sorted"].make().fit(x[:, 0], y[:, 0]) for _ in range(2))
    np.testing.assert_array_equal(first.predict(x[:, 1]), second.predict(x[:, 1]))  # seeded: refits are identical
