"""TinyRecursiveModel and its deep-supervision training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trm_env import TinyRecursiveModel
from trm_env.model import torch_threads
from trm_env.synthetic import load_regime_chain
from trm_env.training import TrainConfig, evaluate_steps, train

TINY = dict(hidden_dim=16, n_latent=2, n_cycles=2, max_steps=5)


def _model(input_dim: int = 7, **kwargs) -> TinyRecursiveModel:
    torch.manual_seed(0)
    return TinyRecursiveModel(input_dim=input_dim, **{**TINY, **kwargs})


@pytest.fixture(scope="module")
def small_task():
    return load_regime_chain(n=300, seed=1, n_chunks=5, max_difficulty=4)


def test_step_and_rollout_shapes():
    model = _model()
    x = torch.randn(4, 7)
    state, task_logits, halt_logits = model.step(model.initial_state(x))
    assert task_logits.shape == (4, 8) and halt_logits.shape == (4,)
    assert state.step.tolist() == [1, 1, 1, 1]
    logits, halts, answers = model.eval().rollout(x, return_answers=True)
    assert logits.shape == (4, 5, 8) and halts.shape == (4, 5) and answers.shape == (4, 5, 16)
    assert model.rollout(x, steps=2)[0].shape == (4, 2, 8)


@pytest.mark.parametrize("stream", [False, True])
def test_step_by_step_equals_batched_rollout(stream: bool):
    model = _model(input_dim=3 + 5 * 2, n_chunks=5, chunk_dim=2) if stream else _model()
    model.eval()
    x = torch.randn(6, model.input_dim)
    batched, halts = model.rollout(x)
    state = model.initial_state(x)
    with torch.no_grad():
        for k in range(model.max_steps):
            state, logits, halt = model.step(state)
            torch.testing.assert_close(logits, batched[:, k], rtol=0, atol=1e-6)
            torch.testing.assert_close(halt, halts[:, k], rtol=0, atol=1e-6)
    # every sample is computed independently of the others in its batch
    torch.testing.assert_close(model.rollout(x[2:3])[0], batched[2:3], rtol=0, atol=1e-5)


def test_stream_step_sees_its_own_chunk():
    model = _model(input_dim=5 * 2, n_chunks=5, chunk_dim=2).eval()
    x = torch.randn(3, 10)
    changed = x.clone()
    changed[:, 6:8] += 1.0  # chunk 4 (0-based 3)
    a, _ = model.rollout(x)
    b, _ = model.rollout(changed)
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=0, atol=0)
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_no_gradient_crosses_a_supervision_step():
    model = _model(n_cycles=1).train()
    y0 = torch.zeros(4, 16, requires_grad=True)
    state = model.initial_state(torch.randn(4, 7))._replace(y=y0)
    state, logits1, _ = model.step(state)
    assert not state.y.requires_grad and not state.z.requires_grad
    _, logits2, halts2 = model.step(state)
    (logits2.sum() + halts2.sum()).backward(retain_graph=True)  # the input embedding is shared
    assert y0.grad is None  # step 2's loss does not reach step 1's input state
    assert model.core.up.weight.grad.abs().sum() > 0
    logits1.sum().backward()
    assert y0.grad.abs().sum() > 0  # while step 1's loss does


def test_halt_head_starts_biased_to_continue():
    model = _model().eval()
    _, halts = model.rollout(torch.randn(32, 7))
    assert torch.sigmoid(halts).max() < 0.01


@pytest.mark.parametrize(
    ("x", "match"),
    [(torch.randn(3, 6), "width 7"), (torch.full((2, 7), float("nan")), "NaN"), (torch.randn(7), "width 7")],
)
def test_bad_input(x, match):
    model = _model()
    with pytest.raises(ValueError, match=match):
        model.rollout(x)


@pytest.mark.parametrize(
    "kwargs", [dict(max_steps=0), dict(hidden_dim=0), dict(n_latent=0), dict(n_chunks=2), dict(input_dim=0)]
)
def test_bad_model_config(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs)) if "n_chunks" not in kwargs else "stream"):
        TinyRecursiveModel(**{"input_dim": 7, **kwargs})


def test_save_load_round_trip(tmp_path):
    model = _model().eval()
    model.save(tmp_path / "model.pt")
    loaded = TinyRecursiveModel.load(tmp_path)
    x = torch.randn(5, 7)
    torch.testing.assert_close(loaded.rollout(x)[0], model.rollout(x)[0], rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_and_mismatched_checkpoints_are_refused(tmp_path):
    model = _model()
    model.save(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="input width 7, but the task has 9"):
        TinyRecursiveModel.load(tmp_path / "model.pt", input_dim=9)
    good = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        TinyRecursiveModel.load(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a TinyRecursiveModel checkpoint"):
        TinyRecursiveModel.load(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not exist"):
        TinyRecursiveModel.load(tmp_path / "missing.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"corrupt or unreadable: the file is empty \(0 bytes\)"):
        TinyRecursiveModel.load(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"corrupt or unreadable: \w+Error: .+"):  # the reason is named
        TinyRecursiveModel.load(tmp_path / "junk.pt")


def _tiny_config(**kwargs) -> TrainConfig:
    base = dict(task="regime-chain", epochs=3, batch_size=64, patience=10, class_weights=False, **TINY)
    return TrainConfig(**{**base, **kwargs})


def test_tiny_training_run_decreases_the_loss(small_task, tmp_path):
    config = _tiny_config(epochs=6, lr=3e-3)
    torch.manual_seed(config.seed)
    from trm_env.training import build_model

    untrained = evaluate_steps(build_model(config, small_task), small_task, "val")
    _, metrics = train(config, out_dir=tmp_path, task=small_task, progress=False, tensorboard=False)
    assert metrics["val"]["profit_weighted_ce"][-1] < untrained["profit_weighted_ce"][-1] - 0.1
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["epochs"] == 6 and saved["task_fingerprint"] == small_task.fingerprint()
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == metrics["test"]
    reloaded = TinyRecursiveModel.load(tmp_path, input_dim=small_task.num_features)
    assert evaluate_steps(reloaded, small_task, "test") == metrics["test"]


def test_training_is_deterministic_under_a_seed(small_task):
    runs = [train(_tiny_config(), task=small_task, progress=False)[0] for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = train(_tiny_config(seed=1), task=small_task, progress=False)[0]
    assert not torch.equal(other.task_head.weight, runs[0].task_head.weight)


@pytest.mark.parametrize("kwargs", [dict(max_steps=0), dict(hidden_dim=0), dict(epochs=0), dict(lr=-1.0)])
def test_bad_training_config_fails_before_work(kwargs, small_task):
    with pytest.raises(ValueError):
        train(_tiny_config(**kwargs), task=small_task, progress=False)


def test_evaluate_steps_halt_head_histogram(small_task):
    model = _model(input_dim=small_task.num_features, n_chunks=5, chunk_dim=9)
    metrics = evaluate_steps(model, small_task, "test")
    n = len(small_task.split("test"))
    assert metrics["n"] == n and sum(metrics["halt_head"]["histogram"]) == n
    # the untrained head is biased to continue: everything halts at K
    assert metrics["halt_head"]["histogram"][-1] == n
    assert metrics["halt_head"]["accuracy"] == pytest.approx(metrics["accuracy"][-1])
    assert np.all(np.isfinite(metrics["profit_weighted_ce"]))


def test_blocked_threaded_rollout_equals_one_block():
    model = _model().eval()
    x = torch.randn(9_000, 7, generator=torch.Generator().manual_seed(3))  # three blocks of up to 4096 rows
    with torch_threads(2):
        blocked = model.rollout(x, return_answers=True)
    with torch.no_grad():
        whole = model._rollout_block(x, model.max_steps, return_answers=True)
    for a, b in zip(blocked, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
