"""Tests for trm_env/loss.py: the TRM loss, its pieces, and its input validation (issue 2)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trm_env.loss import TRMLoss, class_weights_from_labels, halt_target, profit_weight, profit_weighted_ce

ROOT = Path(__file__).resolve().parents[1]
C = 8  # the default number of strategies
F64 = torch.float64
COMPONENT_KEYS = (
    "total_loss halt_loss task_loss profit_weighted_task_loss halt_target_rate mean_profit_weight".split()
)


def random_batch(batch: int = 64, seed: int = 0, halt_2d: bool = False):
    """Float64 (task_logits, halt_logits, labels, pnl); half the labels agree with the argmax."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, C, generator=gen, dtype=F64) * 3
    halt = torch.randn((batch, 1) if halt_2d else (batch,), generator=gen, dtype=F64)
    labels = torch.randint(0, C, (batch,), generator=gen)
    labels = torch.where(torch.rand(batch, generator=gen) < 0.5, logits.argmax(dim=1), labels)
    pnl = torch.randn(batch, generator=gen, dtype=F64) * 0.05
    return logits, halt, labels, pnl


def reference(
    logits,
    halt,
    labels,
    pnl,
    *,
    lambda_halt=0.01,
    lambda_profit=1.0,
    class_weights=None,
    confidence_threshold=0.7,
    pnl_scale=0.05,
):
    """The TRM loss written out from the spec with torch primitives only."""
    batch, classes = logits.shape
    shifted = logits - logits.max(dim=1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    nll = -(log_probs * F.one_hot(labels, classes).to(logits.dtype)).sum(dim=1)
    w = torch.ones(classes) if class_weights is None else class_weights
    w = w.to(logits.dtype)[labels]
    pw = 1.0 - torch.tanh(pnl / pnl_scale)
    probs = shifted.exp() / shifted.exp().sum(dim=1, keepdim=True)
    confident_and_correct = (probs.max(dim=1).values > confidence_threshold) & (probs.argmax(dim=1) == labels)
    target = confident_and_correct.to(logits.dtype)
    s = torch.sigmoid(halt.reshape(batch))
    halt_loss = -(target * s.log() + (1 - target) * (1 - s).log()).mean()
    pw_task = (pw * w * nll).mean()
    return {
        "total_loss": lambda_halt * halt_loss + lambda_profit * pw_task,
        "halt_loss": halt_loss,
        "task_loss": (w * nll).sum() / w.sum(),
        "profit_weighted_task_loss": pw_task,
        "halt_target_rate": target.mean(),
        "mean_profit_weight": pw.mean(),
        "lambda_halt": lambda_halt,
        "lambda_profit": lambda_profit,
    }


# --------------------------------------------------------------------------- profit weight


@pytest.mark.parametrize(
    ("pnl", "expected"),
    [(0.10, 0.0360), (0.05, 0.2384), (0.0, 1.0000), (-0.05, 1.7616), (-0.10, 1.9640)],
)
def test_profit_weight_table(pnl, expected):
    assert float(profit_weight(torch.tensor(pnl))) == pytest.approx(expected, abs=1e-4)


def test_profit_weight_vectorised_and_custom_scale():
    pnl = torch.tensor([0.02, -0.01, 0.0], dtype=F64)
    expected = torch.tensor([1 - math.tanh(1.0), 1 + math.tanh(0.5), 1.0], dtype=F64)
    torch.testing.assert_close(profit_weight(pnl, pnl_scale=0.02), expected, atol=1e-12, rtol=0)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-0.5, max_value=0.5, allow_nan=False))
def test_profit_weight_strictly_inside_open_interval(pnl):
    # |pnl / scale| <= 10 keeps tanh away from +-1 in float64 (saturation starts near 18.7).
    w = float(profit_weight(torch.tensor(pnl, dtype=F64)))
    assert 0.0 < w < 2.0


@settings(max_examples=300, deadline=None)
@given(st.floats(-0.5, 0.5, allow_nan=False), st.floats(-0.5, 0.5, allow_nan=False))
def test_profit_weight_monotone_decreasing(a, b):
    lo, hi = sorted((a, b))
    w_lo, w_hi = profit_weight(torch.tensor([lo, hi], dtype=F64)).tolist()
    assert w_lo >= w_hi
    if hi - lo >= 1e-3:
        assert w_lo > w_hi


# --------------------------------------------------------------------------- TRMLoss vs reference


@pytest.mark.parametrize("halt_2d", [False, True], ids=["halt(B,)", "halt(B,1)"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "class_weights"])
@pytest.mark.parametrize(
    "params",
    [{}, {"lambda_halt": 0.3, "lambda_profit": 0.7, "pnl_scale": 0.02, "confidence_threshold": 0.55}],
    ids=["defaults", "custom"],
)
def test_trm_loss_matches_reference(params, weighted, halt_2d):
    batch = random_batch(halt_2d=halt_2d, seed=bool(params) + 2 * weighted + 4 * halt_2d)
    if weighted:
        params = {**params, "class_weights": torch.linspace(0.2, 3.0, C)}
    got = TRMLoss(**params).to(F64)(*batch, return_components=True)
    want = reference(*batch, **params)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == value, key
        else:
            torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0, msg=key)
    assert 0.0 < float(want["halt_target_rate"]) < 1.0  # both halt targets occur, so BCE is exercised
    if not params:
        assert float(TRMLoss()(*batch)) == pytest.approx(float(want["total_loss"]), abs=1e-6)


def test_class_weighted_task_loss_vs_profit_weighted_mean():
    logits, halt, labels, pnl = random_batch(batch=16, seed=7)
    w = torch.linspace(0.5, 4.0, C, dtype=F64)
    got = TRMLoss(class_weights=w).to(F64)(logits, halt, labels, pnl, return_components=True)
    ce = F.cross_entropy(logits, labels, reduction="none")
    weighted = w[labels] * ce
    torch.testing.assert_close(got["task_loss"], weighted.sum() / w[labels].sum(), atol=1e-10, rtol=0)
    pw_mean = (profit_weight(pnl) * weighted).mean()
    torch.testing.assert_close(got["profit_weighted_task_loss"], pw_mean, atol=1e-10, rtol=0)
    assert abs(float(got["task_loss"]) - float(weighted.mean())) > 1e-3  # the two reductions really differ


def test_docstring_value_uniform_logits():
    labels, pnl = torch.tensor([0, 1, 2, 3]), torch.tensor([0.05, -0.05, 0.0, 0.0])
    got = TRMLoss()(torch.zeros(4, C), torch.zeros(4), labels, pnl)
    assert float(got) == pytest.approx(math.log(8) * 1.0 + 0.01 * math.log(2), abs=1e-5)


def test_class_weights_follow_logit_dtype():
    loss = TRMLoss(class_weights=torch.ones(C))(*random_batch(batch=4))
    assert loss.dtype == F64 and torch.isfinite(loss)


# --------------------------------------------------------------------------- halt target


@pytest.mark.parametrize(
    ("logit0", "label", "expected"),
    [(10.0, 0, 1.0), (10.0, 1, 0.0), (0.1, 0, 0.0)],
    ids=["confident+correct", "confident+wrong", "unconfident+correct"],
)
def test_halt_target_crafted(logit0, label, expected):
    logits = torch.zeros(1, C, dtype=F64)
    logits[0, 0] = logit0
    assert halt_target(logits, torch.tensor([label])).tolist() == [expected]


def test_halt_target_threshold_is_strict():
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=F64)
    labels = torch.tensor([0])
    p_max = float(logits.softmax(dim=-1).max())
    assert halt_target(logits, labels, confidence_threshold=p_max).tolist() == [0.0]
    assert halt_target(logits, labels, confidence_threshold=p_max - 1e-12).tolist() == [1.0]


def test_halt_target_has_no_grad():
    logits = torch.randn(5, C, requires_grad=True)
    target = halt_target(logits, logits.argmax(dim=1))
    assert not target.requires_grad
    assert target.dtype == logits.dtype


# --------------------------------------------------------------------------- gradients


def test_gradients_reach_logits_and_skip_halt_target():
    logits, halt, labels, pnl = (t.requires_grad_() if t.is_floating_point() else t for t in random_batch(32))
    lambda_halt = 0.25
    TRMLoss(lambda_halt=lambda_halt)(logits, halt, labels, pnl).backward()
    for grad in (logits.grad, halt.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    target = halt_target(logits, labels)
    expected = (torch.sigmoid(halt.detach()) - target) / len(halt) * lambda_halt
    torch.testing.assert_close(halt.grad, expected, atol=1e-12, rtol=0)


def test_halt_term_sends_no_gradient_to_task_logits():
    logits, halt, labels, pnl = random_batch(16)
    logits.requires_grad_()
    TRMLoss(lambda_halt=1.0, lambda_profit=0.0)(logits, halt, labels, pnl).backward()
    assert logits.grad is None or torch.count_nonzero(logits.grad) == 0


# --------------------------------------------------------------------------- class weights


def test_class_weights_is_a_buffer_that_moves():
    criterion = TRMLoss(class_weights=torch.arange(1.0, C + 1))
    assert "class_weights" in criterion.state_dict()
    assert any(b is criterion.class_weights for b in criterion.buffers())
    assert criterion.to("cpu").class_weights.device.type == "cpu"
    assert criterion.to(F64).class_weights.dtype == F64
    torch.testing.assert_close(criterion.class_weights, torch.arange(1.0, C + 1, dtype=F64))
    assert "class_weights" not in TRMLoss().state_dict()


@pytest.mark.parametrize(
    ("labels", "num_classes", "expected"),
    [
        ([0, 0, 0, 1], 2, [0.5, 1.5]),
        ([0, 1, 1, 2, 2, 2, 2], 3, [12 / 7, 6 / 7, 3 / 7]),
        (list(range(C)) * 3, C, [1.0] * C),
    ],
)
def test_class_weights_from_labels_values(labels, num_classes, expected):
    w = class_weights_from_labels(torch.tensor(labels), num_classes=num_classes)
    torch.testing.assert_close(w, torch.tensor(expected), atol=1e-6, rtol=0)
    assert float(w.sum()) == pytest.approx(num_classes, abs=1e-5)


@pytest.mark.parametrize(
    ("labels", "exc", "match"),
    [
        (torch.tensor([0, 0, 2]), ValueError, r"class\(es\) \[1\]"),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, "labels"),
        (torch.tensor([True, False]), TypeError, "labels"),
        (torch.tensor([[0, 1, 2]]), ValueError, "labels"),
        (torch.tensor([], dtype=torch.long), ValueError, "labels"),
        (torch.tensor([0, 1, 3]), ValueError, "labels"),
        (torch.tensor([-1, 0, 1, 2]), ValueError, "labels"),
    ],
    ids=["absent-class", "float", "bool", "2-D", "empty", "too-large", "negative"],
)
def test_class_weights_from_labels_bad_input(labels, exc, match):
    with pytest.raises(exc, match=match):
        class_weights_from_labels(labels, num_classes=3)


# --------------------------------------------------------------------------- property: loss


def float32_tensors(shape, bound: float):
    return arrays(np.float32, shape, elements=st.floats(-bound, bound, width=32)).map(torch.from_numpy)


@st.composite
def finite_batches(draw):
    """Finite float32 (task_logits, halt_logits, labels, pnl, class_weights or None) of batch 1..16."""
    batch = draw(st.integers(1, 16))
    logits = draw(float32_tensors((batch, C), 1e3))
    halt = draw(float32_tensors(batch, 1e3))
    labels = torch.from_numpy(draw(arrays(np.int64, batch, elements=st.integers(0, C - 1))))
    pnl = draw(float32_tensors(batch, 10.0))
    weights = draw(st.none() | arrays(np.float32, C, elements=st.floats(0.25, 10.0, width=32)))
    return logits, halt, labels, pnl, None if weights is None else torch.from_numpy(weights)


@settings(max_examples=300, deadline=None)
@given(finite_batches())
def test_loss_finite_and_nonnegative(batch):
    *inputs, weights = batch
    components = TRMLoss(class_weights=weights)(*inputs, return_components=True)
    for key in COMPONENT_KEYS:
        value = float(components[key])
        assert math.isfinite(value) and value >= 0.0, (key, value)
    assert 0.0 <= float(components["halt_target_rate"]) <= 1.0


# --------------------------------------------------------------------------- bad input


def _valid(batch: int = 4, **overrides):
    """A valid batch of size 4 (or ``batch``) for TRMLoss, with some inputs replaced."""
    inputs = {
        "task_logits": torch.zeros(batch, C),
        "halt_logits": torch.zeros(batch),
        "labels": torch.arange(batch),
        "pnl": torch.zeros(batch),
    }
    return {**inputs, **overrides}


def _with_nonfinite(name: str, value: float):
    inputs = _valid()
    inputs[name].view(-1)[1] = value
    return inputs


BAD_FORWARD = {
    "10-classes": (_valid(task_logits=torch.zeros(4, 10)), ValueError, "task_logits.*num_classes=8"),
    "logits-1D": (_valid(task_logits=torch.zeros(C)), ValueError, "task_logits must be 2-D"),
    "logits-3D": (_valid(task_logits=torch.zeros(4, 1, C)), ValueError, "task_logits must be 2-D"),
    "logits-int": (_valid(task_logits=torch.zeros(4, C, dtype=torch.long)), TypeError, "task_logits"),
    "empty-batch": (_valid(0), ValueError, "empty batch.*task_logits"),
    "labels-batch": (_valid(labels=torch.arange(3)), ValueError, r"labels must have shape \(4,\)"),
    "pnl-batch": (_valid(pnl=torch.zeros(5)), ValueError, r"pnl must have shape \(4,\)"),
    "halt-batch": (_valid(halt_logits=torch.zeros(3)), ValueError, r"halt_logits.*\(3,\)"),
    "halt-(B,2)": (_valid(halt_logits=torch.zeros(4, 2)), ValueError, r"halt_logits.*\(4, 2\)"),
    "halt-(B,1,1)": (_valid(halt_logits=torch.zeros(4, 1, 1)), ValueError, r"halt_logits.*\(4, 1, 1\)"),
    "labels-negative": (_valid(labels=torch.tensor([0, -1, 2, 3])), ValueError, "labels must lie in"),
    "labels-too-large": (_valid(labels=torch.tensor([0, 1, 2, C])), ValueError, "labels must lie in"),
    "labels-float": (_valid(labels=torch.zeros(4)), TypeError, "labels"),
    "labels-bool": (_valid(labels=torch.zeros(4, dtype=torch.bool)), TypeError, "labels"),
    **{
        f"{name}-{value}": (_with_nonfinite(name, value), ValueError, f"{name} must be finite")
        for name in ("pnl", "task_logits", "halt_logits")
        for value in (math.nan, math.inf, -math.inf)
    },
}


@pytest.mark.parametrize(("inputs", "exc", "match"), BAD_FORWARD.values(), ids=BAD_FORWARD.keys())
def test_forward_rejects_bad_input(inputs, exc, match):
    with pytest.raises(exc, match=match):
        TRMLoss()(**inputs)


BAD_THRESHOLDS = (0.0, 1.0, 1.5, -0.1)
BAD_PARAMS = {
    "class_weights-short": ({"class_weights": torch.ones(C - 1)}, r"class_weights must have shape \(8,\)"),
    "class_weights-2D": ({"class_weights": torch.ones(1, C)}, "class_weights must have shape"),
    "class_weights-negative": ({"class_weights": torch.tensor([1.0] * (C - 1) + [-0.1])}, "class_weights"),
    "class_weights-nan": ({"class_weights": torch.tensor([1.0] * (C - 1) + [math.nan])}, "class_weights"),
    "class_weights-inf": ({"class_weights": torch.tensor([1.0] * (C - 1) + [math.inf])}, "class_weights"),
    **{f"pnl_scale={s}": ({"pnl_scale": s}, "pnl_scale") for s in (0.0, -0.05, math.nan)},
    **{f"threshold={t}": ({"confidence_threshold": t}, "confidence_threshold") for t in BAD_THRESHOLDS},
    "num_classes=1": ({"num_classes": 1}, "num_classes"),
    "lambda_halt<0": ({"lambda_halt": -0.1}, "lambda_halt"),
    "lambda_profit<0": ({"lambda_profit": -1.0}, "lambda_profit"),
}


@pytest.mark.parametrize(("params", "match"), BAD_PARAMS.values(), ids=BAD_PARAMS.keys())
def test_constructor_rejects_bad_params(params, match):
    with pytest.raises(ValueError, match=match):
        TRMLoss(**params)


@pytest.mark.parametrize("pnl_scale", [0.0, -1.0])
def test_profit_weight_rejects_bad_scale(pnl_scale):
    with pytest.raises(ValueError, match="pnl_scale"):
        profit_weight(torch.zeros(3), pnl_scale=pnl_scale)
    with pytest.raises(ValueError, match="pnl_scale"):
        profit_weighted_ce(torch.zeros(3, C), torch.zeros(3, dtype=torch.long), torch.zeros(3), pnl_scale)


@pytest.mark.parametrize("threshold", BAD_THRESHOLDS)
def test_halt_target_rejects_bad_threshold(threshold):
    with pytest.raises(ValueError, match="confidence_threshold"):
        halt_target(torch.zeros(2, C), torch.zeros(2, dtype=torch.long), threshold)


# --------------------------------------------------------------------------- profit_weighted_ce


def test_profit_weighted_ce_matches_weight_times_ce():
    logits, halt, labels, pnl = random_batch(batch=16, seed=3)
    expected = profit_weight(pnl, 0.03) * F.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(profit_weighted_ce(logits, labels, pnl, 0.03), expected, atol=1e-12, rtol=0)
    components = TRMLoss()(logits, halt, labels, pnl, return_components=True)
    torch.testing.assert_close(
        profit_weighted_ce(logits, labels, pnl).mean(), components["profit_weighted_task_loss"]
    )


def test_profit_weighted_ce_broadcasts_over_steps():
    gen = torch.Generator().manual_seed(5)
    batch, steps = 6, 4
    logits = torch.randn(batch, steps, C, generator=gen, dtype=F64)
    labels = torch.randint(0, C, (batch, 1), generator=gen)
    pnl = torch.randn(batch, 1, generator=gen, dtype=F64) * 0.05
    got = profit_weighted_ce(logits, labels, pnl)
    assert got.shape == (batch, steps)
    for k in range(steps):
        expected = profit_weight(pnl[:, 0]) * F.cross_entropy(logits[:, k], labels[:, 0], reduction="none")
        torch.testing.assert_close(got[:, k], expected, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- sanity-check script


def test_repr_shows_the_hyperparameters():
    text = repr(TRMLoss(lambda_halt=0.02, confidence_threshold=0.4, pnl_scale=0.03, num_classes=3,
                        class_weights=torch.ones(3)))  # fmt: skip
    for needle in ("lambda_halt=0.02", "lambda_profit=1.0", "confidence_threshold=0.4", "pnl_scale=0.03",
                   "num_classes=3", "class_weights=tensor of 3"):  # fmt: skip
        assert needle in text, text
    assert "class_weights=None" in repr(TRMLoss())


def test_module_sanity_check_runs():
    command = [sys.executable, "-m", "trm_env.loss"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for needle in (*COMPONENT_KEYS, "0.0360", "0.2384", "1.0000", "1.7616", "1.9640"):
        assert needle in result.stdout, needle
