"""Live halting: the per-step observation, the engine (compaction, continuous batching, stateful policies),
``evaluate_live`` against ``evaluate`` for every deployable family on every task, and the live envs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

import trm_env  # noqa: F401  (registers the ids)
from agents import evaluate, evaluate_live, evaluate_policies, make_policy, train_rl_policy
from agents.fitted_q import FittedQPolicy
from agents.heads import ACTPolicy, ContinuationHeadPolicy, CorrectHeadPolicy, PonderPolicy
from agents.policies import HaltingPolicy, OraclePolicy, PrivilegedPolicy
from trm_env.env import ENV_IDS
from trm_env.live import full_depth, halt_live
from trm_env.model import TinyRecursiveModel
from trm_env.observation import initial_carry, observation_layout, observation_step, observation_table
from trm_env.rollouts import shipped_checkpoint, simulate
from trm_env.sb3 import make_sb3_vec_env
from trm_env.stepping import TableSpec
from trm_env.tasks import load_task

TASKS = ("sp500", "regime-chain", "pointer", "pointer-extrapolate")
REGISTERED = sorted(ENV_IDS)


# ---- the one per-step observation ------------------------------------------------------------------


def test_observation_step_by_hand() -> None:
    """Two classes, two rows at different steps: every column computed by hand."""
    logits = torch.tensor([[0.0, np.log(3.0)], [np.log(4.0), 0.0]], dtype=torch.float32)  # p = (1/4, 3/4), (4/5, 1/5)
    carry = initial_carry(2, 2)._replace(prediction=torch.tensor([1, 1]), stable=torch.tensor([2.0, 5.0]),
                                         probs=torch.tensor([[0.5, 0.5], [0.5, 0.5]]))  # fmt: skip
    carry = carry._replace(log_probs=carry.probs.log())
    obs, new = observation_step(logits, torch.tensor([0.0, 2.0]), torch.tensor([3, 1]), 4, carry)
    p = np.array([[0.25, 0.75], [0.8, 0.2]])
    entropy = -(p * np.log(p)).sum(1)
    expected = np.column_stack([p, p.max(1), entropy, [0.5, 1 / (1 + np.exp(-2.0))], [3 / 4, 1 / 4],
                                np.abs(p - 0.5).sum(1) / 2, (p * np.log(p / 0.5)).sum(1), entropy - np.log(2),
                                [3.0, 1.0]])  # fmt: skip
    np.testing.assert_allclose(obs.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert new.prediction.tolist() == [1, 0] and new.stable.tolist() == [3.0, 1.0]
    assert observation_layout(2, 0)["stable_steps"] == slice(9, 10)  # the columns above, in the layout's order


def test_table_rows_equal_observation_step_on_any_batch() -> None:
    """The table is observation_step over K steps: any subset of rows, at mixed steps, gives the same rows."""
    torch.manual_seed(0)
    n, k, c, h = 12, 5, 3, 4
    logits, halt, y = torch.randn(n, k, c) * 3, torch.randn(n, k), torch.randn(n, k, h).clamp(-2, 2)
    table, layout = observation_table(logits, halt, y)
    assert table.shape == (n, k, c + 8 + h) and layout["latent"] == slice(c + 8, c + 8 + h)
    rows = torch.tensor([7, 2, 9])
    carry = initial_carry(3, c)
    for t in range(k):  # the three rows alone, step by step, summary mode
        obs, carry = observation_step(logits[rows, t], halt[rows, t], torch.full((3,), t + 1), k, carry)
        np.testing.assert_array_equal(obs.numpy(), table[rows, t, : layout["latent"].start])


def test_model_rows_at_mixed_steps_step_like_a_rollout() -> None:
    """Stream mode: rows of one batch at different steps each see their own chunk (TRMState.step per row)."""
    torch.manual_seed(0)
    model = TinyRecursiveModel(input_dim=3 + 4 * 2, hidden_dim=16, max_steps=6, n_chunks=4, chunk_dim=2).eval()
    x = torch.randn(3, model.input_dim)
    full, _ = model.rollout(x)
    with torch.no_grad():
        late = model.initial_state(x[:1])
        for _ in range(3):
            late, _, _ = model.step(late)  # row 0 at step 3
        fresh = model.initial_state(x[1:])
        state = type(late)(*[torch.cat([a, b]) for a, b in zip(late, fresh, strict=True)])
        for step in range(3):
            state, logits, _ = model.step(state)
            torch.testing.assert_close(logits[0], full[0, 3 + step], rtol=0, atol=1e-6)
            torch.testing.assert_close(logits[1:], full[1:, step], rtol=0, atol=1e-6)
    assert state.step.tolist() == [6, 3, 3]


# ---- the engine on a hand-made stepper ----------------------------------------------------------------


class Counter(NamedTuple):
    value: torch.Tensor  # (B,) the input, carried
    steps: torch.Tensor  # (B,)


class CountingStepper:
    """Class 1 becomes likely once a row's step reaches its input value; records each step's batch size."""

    max_steps, pnl_scale = 6, 0.05

    def __init__(self) -> None:
        self.batches: list[int] = []

    def initial_state(self, x: torch.Tensor) -> Counter:
        return Counter(x[:, 0].clone(), torch.zeros(len(x)))

    def step(self, state: Counter) -> tuple[Counter, torch.Tensor, None]:
        self.batches.append(len(state.value))
        steps = state.steps + 1
        logits = torch.stack([torch.zeros_like(steps), 5.0 * (steps >= state.value) - 2.5], dim=1)
        return Counter(state.value, steps), logits, None


class FirstConfident(HaltingPolicy):
    name, stateful = "first_confident", True

    def __init__(self) -> None:
        self.calls: np.ndarray = np.zeros(0)  # per row: how many calls it has been through

    def select(self, rows: np.ndarray) -> None:
        self.calls = np.where(rows >= 0, self.calls[np.maximum(rows, 0)] if len(self.calls) else 0, 0)

    def act(self, observations: np.ndarray, info: Any = None) -> np.ndarray:
        self.calls = self.calls + 1
        assert np.array_equal(self.calls, info["step"]), "a row's state followed another row"
        return (observations[:, 1] > 0.9).astype(np.int64)


@pytest.mark.parametrize("batch_size", [1, 3, 16, 64])
def test_engine_retires_rows_and_refills_the_batch(batch_size: int) -> None:
    values = torch.tensor([2.0, 5.0, 1.0, 9.0, 3.0, 4.0, 1.0] * 3)[:, None]  # 9: never confident, forced at K=6
    stepper, policy = CountingStepper(), FirstConfident()
    spec = TableSpec("counting", "test", observation_layout(2, 0), 2, 6, len(values), 0.05)
    run = halt_live(stepper, values, policy, spec, batch_size=batch_size)
    assert run.halt_step.tolist() == [2, 5, 1, 6, 3, 4, 1] * 3
    assert run.logits.argmax(-1).tolist() == [1, 1, 1, 0, 1, 1, 1] * 3
    assert run.compute["sample_steps"] == sum(run.halt_step) and (run.latency_s > 0).all()
    assert np.allclose(run.halt_prob, 0.5)  # no halt logits: zeros
    assert min(stepper.batches) == 8  # a batch of fewer rows is padded to MIN_ROWS
    if batch_size == 16:  # 16 admitted; the two rows that halt at step 1 are replaced from the queue at once
        assert stepper.batches[:2] == [16, 16]
    if batch_size == 64:  # all 21 rows at once, then only the unhalted ones: 21, 15, 12, 9, 6 -> padded 8, 8
        assert stepper.batches == [21, 15, 12, 9, 8, 8]


def test_engine_refuses_bad_actions_and_stateful_policies_without_select() -> None:
    spec = TableSpec("counting", "test", observation_layout(2, 0), 2, 6, 2, 0.05)

    class Floats(HaltingPolicy):
        name = "floats"

        def act(self, observations: np.ndarray, info: Any = None) -> np.ndarray:
            return np.full(len(observations), 0.9)

    with pytest.raises(ValueError, match=r"floats.*action 0\.9 at step 1"):
        halt_live(CountingStepper(), torch.ones(2, 1), Floats(), spec)
    stateful = Floats()
    stateful.stateful = True
    with pytest.raises(NotImplementedError, match="select"):
        halt_live(CountingStepper(), torch.ones(2, 1), stateful, spec)


# ---- evaluate_live against evaluate: every deployable family, every task -------------------------------


def _deployable(task: str) -> list[HaltingPolicy]:
    """One point of every deployable family; learned ones fitted on the halt split of the shipped TRM."""
    halt = simulate(task, split="halt")
    rules = [make_policy(name, param) for name, param in (("halt_head", 0.6), ("confidence", 0.9), ("kl_exit", 0.01),
             ("entropy_exit", 0.01), ("patience", 2), ("fixed_depth", 3), ("random", 0.2))]  # fmt: skip
    learned = [FittedQPolicy(0.02, "hgb_sorted").fit(halt), FittedQPolicy(0.02, name="fitted_q_ridge").fit(halt),
               CorrectHeadPolicy(0.9).fit(halt), ContinuationHeadPolicy(0.5).fit(halt), PonderPolicy(0.5).fit(halt),
               ACTPolicy(0.01).fit(halt)]  # fmt: skip
    rl = [train_rl_policy(task=task, algo=algo, total_timesteps=1024, n_envs=8, progress=False, seed=1)
          for algo in ("ppo", "dqn")]  # fmt: skip
    return [*rules, *learned, *rl]


@pytest.mark.parametrize("name", TASKS)
def test_live_equals_the_table_for_every_deployable_family(name: str) -> None:
    """Halting step, prediction, label, correctness and pnl identical; floats within 2e-5 (2000 test samples)."""
    policies = _deployable(name)
    full = load_task(name)
    task = replace(full, splits={**full.splits, "test": full.splits["test"][:2000]})
    assert {p.name for p in policies} >= {"halt_head", "fitted_q", "ponder", "act", "rl_ppo", "rl_dqn", "random"}
    table = evaluate_policies(policies, task)
    for policy in policies:
        expected = table[table["policy"] == policy.name].iloc[:, 4:].reset_index(drop=True)
        for batch_size in (1024, 200):
            live = evaluate_live(policy, task, batch_size=batch_size)
            floats = ["profit_weighted_ce", "episode_return"]
            exact = [c for c in live.columns if c not in floats]
            pd.testing.assert_frame_equal(live[exact], expected[exact], check_dtype=True, obj=repr(policy))
            np.testing.assert_allclose(live[floats], expected[floats], rtol=0, atol=2e-5)
            assert live.attrs["compute"]["sample_steps"] == live["halt_step"].sum()
    assert table["halt_step"].nunique() > 3


def test_live_refuses_what_reads_the_label_and_checks_its_arguments() -> None:
    for policy in (OraclePolicy(), PrivilegedPolicy("at_difficulty")):
        with pytest.raises(ValueError, match="cannot run live: it reads"):
            evaluate_live(policy, "regime-chain")
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_live(make_policy("halt_head", 0.5), "regime-chain", batch_size=0)
    with pytest.raises(ValueError, match="raw inputs need checkpoint"):
        evaluate_live(make_policy("halt_head", 0.5), np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"max_steps must be an integer in 1\.\.16"):
        evaluate_live(make_policy("halt_head", 0.5), "regime-chain", max_steps=17)
    with pytest.raises(TypeError, match="step"):
        evaluate_live(make_policy("halt_head", 0.5), "regime-chain", checkpoint=object())


def test_raw_inputs_run_without_labels() -> None:
    task = load_task("regime-chain")
    inputs = task.features[task.split("test")][:50]
    frame = evaluate_live(make_policy("confidence", 0.9), inputs, checkpoint=shipped_checkpoint("regime-chain"))
    assert list(frame.columns) == ["index", "halt_step", "prediction"]
    table = evaluate(make_policy("confidence", 0.9), "regime-chain")
    np.testing.assert_array_equal(frame["halt_step"], table["halt_step"][:50])


def test_full_depth_runs_every_step() -> None:
    stepper = CountingStepper()
    seconds = full_depth(stepper, torch.ones(10, 1), 6, batch_size=4)
    assert seconds.shape == (3,) and (seconds > 0).all()
    assert stepper.batches == [8] * 6 + [8] * 6 + [8] * 6  # 4, 4, 2 rows: each padded to 8


# ---- the live envs --------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> None:
    """Equal events: discrete values exactly, floats within 1e-5 (a live step runs in a smaller batch)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, tuple | list):
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif np.asarray(a).dtype.kind == "f":
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    else:
        assert np.array_equal(a, b)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_live_env_gives_the_table_env_episodes(env_id: str) -> None:
    rng = np.random.default_rng(0)
    table, live = gym.make(env_id), gym.make(env_id, live=True)
    assert live.unwrapped.live and not table.unwrapped.live
    assert live.observation_space == table.observation_space and live.action_space == table.action_space
    _same(live.reset(seed=4), table.reset(seed=4))
    for _ in range(60):
        action = int(rng.random() < 0.3)
        events = live.step(action), table.step(action)
        _same(*events)
        if events[1][2]:
            _same(live.reset(), table.reset())
    with pytest.raises(AttributeError, match="no table"):
        _ = live.unwrapped.rollouts


@pytest.mark.parametrize("env_id", REGISTERED[:2])
def test_live_vector_and_sb3_envs_give_the_table_episodes(env_id: str) -> None:
    actions = np.random.default_rng(1).integers(0, 2, size=(40, 5))
    envs = [gym.make_vec(env_id, num_envs=5, vectorization_mode="vector_entry_point", live=live)
            for live in (True, False)]
    _same(*(env.reset(seed=7) for env in envs))
    for step in actions:
        _same(*(env.step(step) for env in envs))
    task = gym.spec(env_id).kwargs["task"]
    venvs = [make_sb3_vec_env(num_envs=5, seed=3, task=task, live=live, monitor=False) for live in (True, False)]
    _same(*(venv.reset() for venv in venvs))
    for step in actions:
        _same(*(venv.step(step) for venv in venvs))


def test_live_env_runs_one_model_step_per_vector_step() -> None:
    envs = gym.make_vec(REGISTERED[0], num_envs=6, vectorization_mode="vector_entry_point", live=True)
    model = envs.core.model
    calls: list[int] = []
    original = model.step
    model.step = lambda state, **kw: (calls.append(len(state.x)), original(state, **kw))[1]
    envs.reset(seed=0)
    for actions in ([0] * 6, [1, 0, 1, 0, 0, 0], [0] * 6):
        envs.step(np.array(actions))
    assert calls == [8, 8, 8, 8]  # reset, then one batched step per call (6 rows, padded to 8)


def test_live_env_refuses_a_table() -> None:
    with pytest.raises(ValueError, match="builds no table"):
        gym.make(REGISTERED[0], live=True, rollouts=simulate("sp500"))
    with pytest.raises(ValueError, match="live must be True or False"):
        gym.make(REGISTERED[0], live="yes")


def test_ppo_trains_on_the_live_env() -> None:
    """The live SB3 env serves RL training as the table's does (the StepOneHot extractor reads its TableSpec)."""
    policy = train_rl_policy(task="regime-chain", total_timesteps=512, n_envs=8, progress=False, live=True)
    assert policy.name == "rl_ppo" and evaluate(policy, "regime-chain")["halt_step"].between(1, 16).all()
