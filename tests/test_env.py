"""The halting environment: Gymnasium and SB3 checks, determinism, pickling, the three flavours'
equivalence, hand-checked rewards and observations, and every bad input, for every registered id."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from trm_env.env import ENV_IDS, HaltingCore, HaltingEnv, HaltingVectorEnv, register_envs
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import shipped_checkpoint
from trm_env.sb3 import HaltingSB3VecEnv, make_sb3_vec_env
from trm_env.tasks import Task, load_task

REGISTERED = sorted(env_id for env_id in gym.registry if env_id.startswith("trm_env/"))
ROOT = Path(__file__).resolve().parents[1]


def _task_name(env_id: str) -> str:
    return gym.spec(env_id).kwargs["task"]


def _model(env_id: str) -> TinyRecursiveModel:
    return TinyRecursiveModel.load(shipped_checkpoint(_task_name(env_id)))


def _rollout(env: gym.Env, actions: np.random.Generator, steps: int) -> list[tuple[Any, ...]]:
    """``steps`` random steps (halting with probability 0.3), resetting without a seed when done."""
    events = []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(int(actions.random() < 0.3))
        events.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            events.append(env.reset())
    return events


def _assert_same_events(left: list[tuple[Any, ...]], right: list[tuple[Any, ...]]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            if isinstance(x, np.ndarray):
                np.testing.assert_array_equal(x, y)
            else:
                assert x == y


# ---- registration ------------------------------------------------------------------------------


def test_every_env_id_is_registered_once_and_idempotently() -> None:
    assert REGISTERED == sorted(ENV_IDS)
    specs = [gym.spec(env_id) for env_id in REGISTERED]
    register_envs()
    for env_id, spec in zip(REGISTERED, specs, strict=True):
        assert gym.spec(env_id) is spec
        assert spec.entry_point == "trm_env.env:HaltingEnv"
        assert spec.vector_entry_point == "trm_env.env:HaltingVectorEnv"
        assert spec.max_episode_steps is None
        assert spec.kwargs == {"task": ENV_IDS[env_id]}


def test_lazy_make_imports_the_package() -> None:
    code = (
        "import sys, gymnasium\n"
        "env = gymnasium.make('trm_env:trm_env/TRMHalting-RegimeChain-v0')\n"
        "assert 'trm_env' in sys.modules\n"
        "print(env.unwrapped.max_steps)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 1


# ---- checkers, determinism, pickling, vectorisation, training: every id ---------------------


@pytest.mark.parametrize("env_id", REGISTERED)
def test_gymnasium_check_env_without_warnings(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)
    assert env.unwrapped.max_steps == _model(env_id).max_steps


@pytest.mark.parametrize("env_id", REGISTERED)
@pytest.mark.parametrize("observation", ["summary", "latent"])
def test_sb3_check_env(env_id: str, observation: str) -> None:
    sb3_check_env(gym.make(env_id, observation=observation).unwrapped)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_same_seed_same_50_steps(env_id: str) -> None:
    runs = []
    for _ in range(2):
        env = gym.make(env_id)
        first = env.reset(seed=123)
        runs.append([first, *_rollout(env, np.random.default_rng(0), 50)])
    _assert_same_events(*runs)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_pickle_round_trip_continues_identically(env_id: str) -> None:
    env = gym.make(env_id, render_mode="ansi").unwrapped
    env.reset(seed=5)
    _rollout(env, np.random.default_rng(1), 7)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.core.rollouts is env.core.rollouts  # unpickled into the shared cache
    assert clone.render() == env.render()
    _assert_same_events(_rollout(env, np.random.default_rng(2), 40), _rollout(clone, np.random.default_rng(2), 40))


@pytest.mark.parametrize("env_id", REGISTERED)
def test_native_vector_env(env_id: str) -> None:
    envs = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point")
    assert isinstance(envs, HaltingVectorEnv)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    assert (info["step"] == 1).all() and info["_step"].all()
    obs, rewards, terminated, truncated, info = envs.step(np.array([1, 0, 1, 0]))
    assert terminated.tolist() == [True, False, True, False] and not truncated.any()
    assert envs.observation_space.contains(obs) and rewards.dtype == np.float64
    np.testing.assert_allclose(rewards[[1, 3]], -0.01)
    obs, rewards, terminated, truncated, info = envs.step(np.array([1, 1, 1, 1]))
    assert rewards[0] == rewards[2] == 0.0  # the autoreset step: action ignored
    assert info["step"].tolist() == [1, 2, 1, 2] and terminated.tolist() == [False, True, False, True]
    obs, _ = envs.reset(options={"index": [0, 1, 2, 3]})
    single = gym.make(env_id).unwrapped
    for i in range(4):
        np.testing.assert_array_equal(obs[i], single.reset(options={"index": i})[0])


@pytest.mark.parametrize("env_id", REGISTERED)
def test_sb3_vec_env_trains_ppo(env_id: str) -> None:
    venv = make_sb3_vec_env(num_envs=4, seed=0, task=_task_name(env_id))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, seed=0).learn(256)
    assert model.num_timesteps >= 256


@pytest.mark.parametrize("env_id", REGISTERED)
def test_single_gymnasium_vector_and_sb3_vector_are_identical(env_id: str) -> None:
    """Per sub-env event streams (step: obs, reward, done, index; reset: obs) agree bit for bit."""
    n, seed, steps = 3, 11, 60
    streams = [np.random.default_rng(100 + i) for i in range(n)]
    action_lists = [[int(s.random() < 0.3) for _ in range(steps)] for s in streams]

    single: list[list[tuple[Any, ...]]] = []
    for i in range(n):
        env = gym.make(env_id)
        events = [("reset", env.reset(seed=seed + i)[0])]
        for action in action_lists[i]:
            obs, reward, terminated, truncated, info = env.step(action)
            events.append(("step", obs, np.float32(reward), terminated, truncated, info["index"]))
            if terminated or truncated:
                events.append(("reset", env.reset()[0]))
        single.append(events)

    gym_vec: list[list[tuple[Any, ...]]] = [[] for _ in range(n)]
    envs = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    obs, _ = envs.reset(seed=seed)
    for i in range(n):
        gym_vec[i].append(("reset", obs[i]))
    cursors, prev_done = [0] * n, np.zeros(n, dtype=bool)
    for _ in range(steps):
        actions = np.array([0 if prev_done[i] else action_lists[i][cursors[i]] for i in range(n)])
        obs, rewards, terminated, truncated, info = envs.step(actions)
        for i in range(n):
            if prev_done[i]:
                gym_vec[i].append(("reset", obs[i]))
            else:
                cursors[i] += 1
                gym_vec[i].append(
                    ("step", obs[i], np.float32(rewards[i]), terminated[i], truncated[i], info["index"][i])
                )
        prev_done = terminated | truncated

    sb3_vec: list[list[tuple[Any, ...]]] = [[] for _ in range(n)]
    venv = make_sb3_vec_env(num_envs=n, seed=seed, task=_task_name(env_id))
    obs = venv.reset()
    for i in range(n):
        sb3_vec[i].append(("reset", obs[i]))
    for t in range(steps):
        obs, rewards, dones, infos = venv.step(np.array([action_lists[i][t] for i in range(n)]))
        for i in range(n):
            final = infos[i]["terminal_observation"] if dones[i] else obs[i]
            truncated = infos[i].get("TimeLimit.truncated", False)
            sb3_vec[i].append(("step", final, rewards[i], dones[i], truncated, infos[i]["index"]))
            if dones[i]:
                sb3_vec[i].append(("reset", obs[i]))

    for i in range(n):
        length = min(len(single[i]), len(gym_vec[i]), len(sb3_vec[i]))
        assert length > steps // 2
        assert sum(event[0] == "reset" for event in single[i][:length]) > 3
        _assert_same_events(single[i][:length], gym_vec[i][:length])
        _assert_same_events(single[i][:length], sb3_vec[i][:length])


# ---- rewards and observations by hand ----------------------------------------------------------


@pytest.mark.parametrize("env_id", REGISTERED)
@pytest.mark.parametrize("halt_step", [1, 3, None])  # None: never halt, forced commit at max_steps
def test_rewards_and_observations_by_hand(env_id: str, halt_step: int | None) -> None:
    task, model = load_task(_task_name(env_id)), _model(env_id)
    position = 5
    row = int(task.split("test")[position])
    with torch.no_grad():
        x = torch.from_numpy(np.array(task.features[row : row + 1]))
        logits, halt_logits, y = model.rollout(x, return_answers=True)
    logits, halt_logits, y = logits[0].double().numpy(), halt_logits[0].double().numpy(), y[0].numpy()
    k, c = logits.shape
    t = k if halt_step is None else halt_step
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    label, label_pnl = int(task.labels[row]), float(task.pnl[row])
    prediction = int(np.argmax(logits[t - 1]))
    ce = -np.log(probs[t - 1, label])
    expected = {
        "profit_weighted_ce": -(1.0 - math.tanh(label_pnl / 0.05)) * ce,
        "pnl": float(task.pnl_matrix[row, prediction]) / 0.05,
        "correct": float(prediction == label),
    }
    previous = probs[t - 2] if t > 1 else np.full(c, 1.0 / c)
    halt_prob = 1.0 / (1.0 + math.exp(-halt_logits[t - 1]))
    entropy = [-(p * np.log(p)).sum() for p in (previous, probs[t - 1])]
    argmax = logits.argmax(-1)
    stable = next((t - s for s in range(t - 1, 0, -1) if argmax[s - 1] != argmax[t - 1]), t)
    summary = np.concatenate(
        [
            probs[t - 1],
            [probs[t - 1].max(), entropy[1], halt_prob, t / k],
            [0.5 * np.abs(probs[t - 1] - previous).sum(), (probs[t - 1] * np.log(probs[t - 1] / previous)).sum()],
            [entropy[1] - entropy[0], stable],
        ]
    )
    for reward_mode, terminal in expected.items():
        env = gym.make(env_id, reward=reward_mode, observation="latent")
        _, info = env.reset(options={"index": position})
        assert info["index"] == position and info["step"] == 1 and info["label"] == label
        total = 0.0
        for action in [0] * (t - 1) + [0 if halt_step is None else 1]:
            obs, reward, terminated, truncated, info = env.step(action)
            total += reward
        assert terminated and not truncated and info["step"] == t
        np.testing.assert_allclose(total, -0.01 * (t - 1) + terminal, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(obs[: c + 8], summary, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(obs[c + 8 :], y[t - 1], rtol=1e-5, atol=1e-6)
        assert info["prediction"] == prediction and info["correct"] == (prediction == label)
        np.testing.assert_allclose(info["pnl"], task.pnl_matrix[row, prediction], rtol=1e-6)
        np.testing.assert_allclose(info["profit_weighted_ce"], -expected["profit_weighted_ce"], rtol=1e-5, atol=1e-6)
        with pytest.raises(RuntimeError, match="reset"):
            env.step(0)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_observations_stay_in_bounds_and_latent_extends_summary(env_id: str) -> None:
    summary, latent = (HaltingCore(_task_name(env_id), observation=mode) for mode in ("summary", "latent"))
    assert summary.observation_space.contains(summary.observations[0])
    low, high = latent.observation_space.low, latent.observation_space.high
    assert (latent.observations >= low).all() and (latent.observations <= high).all()
    np.testing.assert_array_equal(latent.observations[:, : summary.observations.shape[1]], summary.observations)


def test_one_step_episodes_commit_at_once() -> None:
    env = gym.make(REGISTERED[0], max_steps=1, reward="correct")
    for action in (0, 1):
        obs, info = env.reset(options={"index": 2})
        assert obs[env.unwrapped.rollouts.layout["step_fraction"]] == 1.0  # step 1 of 1
        _, reward, terminated, truncated, _ = env.step(action)
        assert terminated and not truncated and reward == float(info["correct"])


def test_in_memory_model_shares_the_cache_with_its_file() -> None:
    env_id = REGISTERED[0]
    from_file = HaltingCore(_task_name(env_id))
    in_memory = HaltingCore(_task_name(env_id), checkpoint=_model(env_id))
    assert in_memory.rollouts is from_file.rollouts


def test_render_modes() -> None:
    env = gym.make(REGISTERED[0], render_mode="ansi")
    env.reset(seed=0)
    assert "step 1/" in env.render()
    envs = gym.make_vec(REGISTERED[0], num_envs=2, render_mode="ansi")  # the native vector env by default
    assert isinstance(envs, HaltingVectorEnv)
    envs.reset(seed=0)
    assert len(envs.render()) == 2
    venv = make_sb3_vec_env(num_envs=2, render_mode="ansi", task=_task_name(REGISTERED[0]))
    venv.reset()
    assert all("step 1/" in text for text in venv.env_method("render"))
    assert venv.get_attr("max_steps") == [venv.max_steps] * 2 and venv.env_is_wrapped(gym.Wrapper) == [False] * 2


# ---- bad input -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regime_chain() -> Task:
    return load_task("regime-chain")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "moon"}, "valid tasks: .*sp500"),
        ({"reward": "sharpe"}, "unknown reward 'sharpe'; valid: .*profit_weighted_ce.*pnl.*correct"),
        ({"observation": "pixels"}, "unknown observation 'pixels'; valid: .*summary.*latent"),
        ({"split": "holdout"}, "unknown split 'holdout'; valid splits: .*train.*val.*test"),
        ({"max_steps": 0}, "max_steps must be an integer in 1..16"),
        ({"max_steps": 10_000}, "max_steps must be an integer in 1..16"),
        ({"max_steps": 2.5}, "max_steps must be an integer"),
        ({"step_cost": -0.1}, "step_cost must be a finite number >= 0"),
        ({"step_cost": float("nan")}, "step_cost must be a finite number >= 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HaltingEnv(**{"task": _task_name(REGISTERED[0]), **kwargs})


def test_unknown_render_mode_is_a_type_error() -> None:
    """A TypeError: SB3's make_vec_env and PPO(id) retry without a render mode on exactly that."""
    with pytest.raises(TypeError, match=r"unknown render_mode 'human'; valid: .*ansi.*rgb_array"):
        HaltingEnv(task=_task_name(REGISTERED[0]), render_mode="human")


def test_checkpoint_of_another_width_is_refused(regime_chain: Task, tmp_path: Path) -> None:
    wrong = TinyRecursiveModel(input_dim=regime_chain.num_features + 1, hidden_dim=8)
    wrong.save(tmp_path / "model.pt")
    for checkpoint in (wrong, tmp_path / "model.pt", tmp_path):
        with pytest.raises(ValueError, match=f"{regime_chain.num_features + 1}.*{regime_chain.num_features}"):
            HaltingEnv(task=regime_chain, checkpoint=checkpoint)


def test_task_without_a_shipped_checkpoint_is_refused(regime_chain: Task) -> None:
    with pytest.raises(ValueError, match="no shipped checkpoint for task 'custom'"):
        HaltingEnv(task=replace(regime_chain, name="custom"))


@pytest.mark.parametrize("action", [2, -1, 1.0, "1", None, np.array([0, 1]), np.array([1])])
def test_bad_single_actions_are_refused(action: Any) -> None:
    env = HaltingEnv(task=_task_name(REGISTERED[0]))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_stepping_without_reset_is_refused() -> None:
    env = HaltingEnv(task=_task_name(REGISTERED[0]))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    env.step(1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    envs = HaltingVectorEnv(num_envs=2, task=_task_name(REGISTERED[0]))
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(np.array([0, 0]))


def test_unknown_reset_options_are_refused() -> None:
    """Defect 8: a typo such as {"idx": 3} is an error, not silently a random sample."""
    env = HaltingEnv(task=_task_name(REGISTERED[0]))
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['idx'\]"):
        env.reset(options={"idx": 3})
    envs = HaltingVectorEnv(num_envs=2, task=_task_name(REGISTERED[0]))
    with pytest.raises(ValueError, match="idx"):
        envs.reset(options={"idx": [0, 1]})
    venv = HaltingSB3VecEnv(num_envs=2, task=_task_name(REGISTERED[0]))
    venv.set_options({"idx": 1})
    with pytest.raises(ValueError, match="idx"):
        venv.reset()


@pytest.mark.parametrize("index", [-1, 10**9, 1.5, "3"])
def test_bad_sample_index_is_refused(index: Any) -> None:
    with pytest.raises(ValueError, match="options\\['index'\\]"):
        HaltingEnv(task=_task_name(REGISTERED[0])).reset(options={"index": index})


@pytest.mark.parametrize("actions", [np.array([0, 2]), np.array([0, -1]), np.array([0.0, 1.0]), np.array([0]), 1])
def test_bad_vector_actions_are_refused(actions: Any) -> None:
    envs = HaltingVectorEnv(num_envs=2, task=_task_name(REGISTERED[0]))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        envs.step(actions)
    venv = HaltingSB3VecEnv(num_envs=2, task=_task_name(REGISTERED[0]))
    venv.reset()
    with pytest.raises(ValueError, match="actions"):
        venv.step(actions)


def test_bad_vector_construction_and_sb3_mutation_are_refused() -> None:
    for cls in (HaltingVectorEnv, HaltingSB3VecEnv):
        with pytest.raises(ValueError, match="num_envs"):
            cls(num_envs=0, task=_task_name(REGISTERED[0]))
    venv = make_sb3_vec_env(num_envs=2, task=_task_name(REGISTERED[0]))
    with pytest.raises(AttributeError, match="step_cost"):
        venv.set_attr("step_cost", 0.5)
    with pytest.raises(AttributeError, match="close"):
        venv.env_method("close")


@pytest.mark.slow  # a subprocess that imports torch and SB3: 4-10 s
def test_benchmark_quick_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    script = ROOT / "experiments" / "benchmark.py"
    cmd = [sys.executable, str(script), "--quick", "--only", "env_single", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())["results"]["env_single"]
    assert result["ours"] > 0 and result["baseline"] > 0 and "| env_single |" in done.stdout
