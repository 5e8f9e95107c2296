"""The fixed-input thinking task ``pointer``: content by brute force, splits, extrapolation, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import trm_env  # noqa: F401  (registers the envs)
from trm_env.pointer import load_pointer
from trm_env.tasks import load_task

N = 400


def _walk(bits: np.ndarray, start: int, hops: int) -> int:
    """Follow the order around the ring one hand at a time: desk i hands it to i + 1 + bit_i."""
    desk = start
    for _ in range(hops):
        desk = (desk + 1 + int(bits[desk])) % len(bits)
    return desk


def test_labels_are_the_desk_after_h_hands_and_the_input_is_fixed() -> None:
    task = load_pointer(n=N, seed=4, nodes=8, max_hops=6)
    low, high = task.features.min(0), task.features.max(0)  # two levels per bit and start column
    raw = task.features > (low + high) / 2
    bits, start = raw[:, :8], raw[:, 8:16].argmax(1)
    for i in range(N):
        assert task.labels[i] == _walk(bits[i], int(start[i]), int(task.difficulty[i]))
    assert task.n_chunks == 0 and task.num_classes == 8 and task.num_features == 17
    assert set(np.unique(task.difficulty)) == set(range(1, 7))
    assert np.all(task.pnl_matrix.argmax(1) == task.labels) and np.allclose(task.pnl, task.pnl_matrix.max(1))
    np.testing.assert_array_equal(task.reference_steps["at_difficulty"], -(-task.difficulty // 4) + 1)


def test_deterministic_per_seed_and_splits_are_disjoint() -> None:
    a, b, c = load_pointer(n=N, seed=1), load_pointer(n=N, seed=1), load_pointer(n=N, seed=2)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    indices = np.concatenate([a.split(name) for name in ("train", "halt", "val", "test")])
    assert np.array_equal(np.sort(indices), np.arange(N))


def test_extrapolation_trains_on_easier_and_tests_on_harder() -> None:
    task = load_task("pointer-extrapolate", n=N, seed=0, max_hops=10, cut=7)
    assert task.name == "pointer-extrapolate" and task.params["extrapolate"] is True
    assert task.difficulty[task.split("test")].min() == 8 and task.difficulty[task.split("test")].max() == 10
    for split in ("train", "halt", "val"):
        assert task.difficulty[task.split(split)].max() <= 7


BAD = [({"n": 5}, "n"), ({"nodes": 2}, "nodes"), ({"max_hops": 1}, "max_hops"),
       ({"extrapolate": True, "cut": 16}, "cut"), ({"scale": 0.0}, "scale")]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "argument"), BAD)
def test_bad_arguments_raise(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        load_pointer(**kwargs)


def test_unknown_override_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="max_hops"):
        load_task("pointer", hops=3)
    with pytest.raises(ValueError, match="extrapolate"):  # the task's name fixes the split rule
        load_task("pointer-extrapolate", extrapolate=False)


@pytest.mark.parametrize("env_id", ["trm_env/TRMHalting-Pointer-v0", "trm_env/TRMHalting-PointerExtrapolate-v0"])
def test_registered_env_runs_the_shipped_pointer_model(env_id: str) -> None:
    env = gym.make(env_id, split="test")
    assert load_task(gym.spec(env_id).kwargs["task"]).n_chunks == 0
    obs, info = env.reset(seed=0)
    assert obs.shape == (16 + 8,) and env.action_space.n == 2
    _, _, terminated, _, info = env.step(1)
    assert terminated and info["step"] == 1 and 1 <= info["difficulty"] <= 16
