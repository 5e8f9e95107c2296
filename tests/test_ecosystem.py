"""Client software nobody here wrote: SB3's string ids, video recording, RL Zoo, and the user's own prices."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import arch.data.sp500
import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.wrappers import RecordVideo
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecMonitor

from trm_env.env import HaltingVectorEnv
from trm_env.sb3 import make_sb3_vec_env
from trm_env.tasks import load_task

REGISTERED = sorted(env_id for env_id in gym.registry if env_id.startswith("trm_env/"))
ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


@pytest.mark.parametrize("env_id", REGISTERED)
def test_sb3_string_ids_and_make_vec_env(env_id: str) -> None:
    """SB3 first asks for render_mode="rgb_array": both entry points now work on every id."""
    model = PPO("MlpPolicy", env_id, n_steps=16, batch_size=16, seed=0, device="cpu")
    assert model.get_env().render_mode == "rgb_array"
    venv = make_vec_env(env_id, n_envs=8, seed=0)
    assert venv.num_envs == 8 and venv.reset().shape[0] == 8


@pytest.mark.parametrize("env_id", REGISTERED)
def test_rgb_array_pictures_the_episode(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    assert env.metadata["render_modes"] == ["ansi", "rgb_array"] and env.metadata["render_fps"] > 0
    env.reset(seed=0, options={"index": 4})
    first = env.render()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    env.step(0)
    second = env.render()
    assert second.shape == first.shape and not np.array_equal(first, second)  # a new column of probabilities
    env.step(1)
    committed = env.render()
    red, green = np.all(committed == [210, 30, 30], axis=-1), np.all(committed == [30, 160, 60], axis=-1)
    assert red.any() or green.any()
    plain = gym.make(env_id)
    plain.reset(seed=0)
    assert plain.render() is None  # no render mode: nothing drawn, nothing returned
    envs = HaltingVectorEnv(num_envs=3, task=gym.spec(env_id).kwargs["task"], render_mode="rgb_array")
    envs.reset(seed=0)
    assert [frame.shape for frame in envs.render()] == [first.shape] * 3
    venv = make_sb3_vec_env(num_envs=2, seed=0, task=gym.spec(env_id).kwargs["task"], render_mode="rgb_array")
    venv.reset()
    assert all(image.shape == first.shape for image in venv.get_images())


def test_record_video_writes_a_file(tmp_path: Path) -> None:
    env = RecordVideo(gym.make(REGISTERED[0], render_mode="rgb_array"), str(tmp_path), episode_trigger=lambda e: True,
                      disable_logger=True)  # fmt: skip
    env.reset(seed=0)
    for action in (0, 0, 1):
        env.step(action)
    env.close()
    videos = list(tmp_path.glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 0


def test_sb3_vec_env_logs_episode_statistics() -> None:
    venv = make_sb3_vec_env(num_envs=4, seed=0, task="regime-chain")
    assert isinstance(venv, VecMonitor)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, seed=0, device="cpu").learn(256)
    assert len(model.ep_info_buffer) > 0  # what rollout/ep_rew_mean is made of
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # evaluate_policy warns when the env is not wrapped in a monitor
        mean, _ = evaluate_policy(model, venv, n_eval_episodes=8)
    assert np.isfinite(mean)


# ---- the user's own prices, end to end ---------------------------------------------------------------------


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"script_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Daily prices 2012-2018 in a CSV: they do not cover the default split dates (train ends 2010)."""
    path = tmp_path_factory.mktemp("prices") / "prices.csv"
    arch.data.sp500.load().loc["2012":].to_csv(path)
    return path


def test_csv_splits_fall_back_to_proportions(prices: Path) -> None:
    task = load_task("csv", path=str(prices))
    assert task.params["split_rule"] == "proportions" and task.params["embargo"] == 5
    sizes = {name: len(rows) for name, rows in task.splits.items()}
    assert sizes["train"] > sizes["test"] > sizes["val"] > 0 and sizes["halt"] > 0
    dated = load_task("csv", path=str(prices), train_end="2015-12-31", halt_end="2016-06-30", val_end="2016-12-31")
    assert dated.params["split_rule"] == "dates"  # explicit dates win
    assert str(dated.dates[dated.splits["test"][0]])[:4] == "2017"


def test_own_prices_end_to_end(prices: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """README's commands: train a TRM on the CSV, make the env, train an agent, compare, run the study."""
    trm = tmp_path / "my-trm"
    _script("train_trm").main(["--task", "csv", "--path", str(prices), "--seed", "0", "--out", str(trm),
                               "--epochs", "1", "--hidden-dim", "16", "--no-progress"])  # fmt: skip
    assert json.loads((trm / "config.json").read_text())["train"]["task_kwargs"] == {"path": str(prices)}
    env = gym.make("trm_env/TRMHalting-v0", task="csv", task_kwargs={"path": str(prices)}, checkpoint=str(trm))
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.task_name == "csv" and obs.shape == env.observation_space.shape
    agent = tmp_path / "agent"
    _script("train_agent").main(["--task", "csv", "--path", str(prices), "--checkpoint", str(trm), "--timesteps",
                                 "256", "--n-envs", "4", "--out", str(agent)])  # fmt: skip
    _script("compare_halting").main(["--task", "csv", "--path", str(prices), "--checkpoint", str(trm), "--rl",
                                     str(agent.with_suffix(".pt")), "--out", str(tmp_path / "compare")])  # fmt: skip
    assert "rl_ppo" in set(pd.read_csv(tmp_path / "compare" / "summary.csv")["policy"])
    config = tmp_path / "study.json"
    config.write_text(json.dumps({"tasks": ["csv"], "trm_seeds": [0], "task_kwargs": {"csv": {"path": str(prices)}},
                                  "checkpoints": {"csv": [str(trm)]}, "total_timesteps": 256, "n_envs": 4,
                                  "learners": ["fitted_q"], "n_resamples": 100}))  # fmt: skip
    assert _script("run").main(["--config", str(config), "--out", str(tmp_path / "study"), "--backend", "serial"]) == 0
    summary = pd.read_csv(tmp_path / "study" / "summary.csv")
    assert {"rl_ppo", "fitted_q", "oracle"} <= set(summary["policy"]) and (summary["task"] == "csv").all()


@pytest.mark.slow
def test_rl_zoo_trains_on_the_halting_env(tmp_path: Path) -> None:
    """README's RL Zoo command, a few thousand steps."""
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "trm_env/TRMHalting-RegimeChain-v0",
               "--gym-packages", "trm_env", "-conf", str(EXPERIMENTS / "configs" / "ppo.yml"), "-n", "4096",
               "-f", str(tmp_path), "--seed", "0", "--eval-freq", "-1", "--env-kwargs", "split:'halt'"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(tmp_path.glob("ppo/*/trm_env-TRMHalting-RegimeChain-v0.zip"))


# ---- the GPU path, as far as a machine without one can check it -------------------------------------------


def test_devices_resolve_and_auto_falls_back_to_the_cpu() -> None:
    import torch

    from trm_env.model import resolve_device
    from trm_env.rollouts import simulate
    from trm_env.training import TrainConfig

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="device must be"):
        TrainConfig(device="gpu0").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        assert simulate("regime-chain", device="auto") is simulate("regime-chain")  # same key: it ran on the CPU
        done = subprocess.run([sys.executable, str(EXPERIMENTS / "gpu_check.py")], capture_output=True, text=True,
                              timeout=120, cwd=ROOT)  # fmt: skip
        assert done.returncode != 0 and "CUDA is not available" in done.stderr
