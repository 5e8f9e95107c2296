"""RL halting agents (agents/rl.py, agents/rl_net.py): training, the greedy batched act, and saving and loading
without running anything stored in the files (issue 18, finding 2)."""

from __future__ import annotations

import base64
import json
import re
import zipfile
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import torch
from stable_baselines3 import DQN, PPO

from agents import RLHaltingPolicy, evaluate, train_rl_policy
from agents.rl import AGENT_FORMAT, StepOneHot, agent_files, save_rl_policy
from trm_env.rollouts import simulate
from trm_env.tasks import load_task

DIM = 16  # regime-chain's summary observation: 8 class probabilities, ..., step fraction at column 11
ALGOS = {"ppo": PPO, "dqn": DQN}


@pytest.fixture(scope="module")
def saved_rl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[RLHaltingPolicy, Path]]:
    """A tiny PPO and DQN agent saved under a name with a dot in it (the cost), as run.py names them."""
    folder = tmp_path_factory.mktemp("rl")
    out = {}
    for algo, steps in (("ppo", 1024), ("dqn", 1500)):
        stem = folder / f"{algo}_cost0.02_seed3"
        policy = train_rl_policy(task="regime-chain", algo=algo, step_cost=0.02, total_timesteps=steps, seed=3,
                                 n_envs=8, split="test", progress=False, out=stem)  # fmt: skip
        out[algo] = (policy, folder / f"{stem.name}.pt")
    return out


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    return simulate("regime-chain").observations["summary"].reshape(-1, DIM)[:4000]


def test_agent_files_keep_the_dotted_stem() -> None:
    names = [p.name for p in agent_files("runs/a/ppo_cost0.01_seed0")]
    assert names == ["ppo_cost0.01_seed0.pt", "ppo_cost0.01_seed0.json", "ppo_cost0.01_seed0.zip"]
    assert agent_files("x/ppo_cost0.01_seed0.json") == agent_files("x/ppo_cost0.01_seed0.zip")


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_rl_save_and_load_round_trip(algo: str, saved_rl: dict[str, tuple[RLHaltingPolicy, Path]],
                                     observations: np.ndarray) -> None:  # fmt: skip
    policy, path = saved_rl[algo]
    weights, settings, export = agent_files(path)
    assert weights == path and weights.is_file() and export.is_file()
    meta = json.loads(settings.read_text())
    assert (meta["algo"], meta["step_cost"], meta["seed"], meta["format"]) == (algo, 0.02, 3, AGENT_FORMAT)
    assert meta["policy"]["kwargs"]["features_extractor_kwargs"] == {"column": 11, "max_steps": 16}
    assert ALGOS[algo].load(export).policy.state_dict().keys() == policy.policy.state_dict().keys()  # an SB3 export
    actions = policy.act(observations)
    assert actions.dtype == np.int64 and set(np.unique(actions)) <= {0, 1}
    for name in (weights, settings, weights.with_suffix("")):
        loaded = RLHaltingPolicy.load(name)
        assert (loaded.name, loaded.param, loaded.seed, loaded.algo) == (f"rl_{algo}", 0.02, 3, algo)
        for a, b in zip(loaded.policy.state_dict().values(), policy.policy.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        assert np.array_equal(loaded.act(observations), actions)
    pd.testing.assert_frame_equal(evaluate(loaded, task="regime-chain"), evaluate(policy, task="regime-chain"))


def _balanced(path: Path, observations: np.ndarray) -> RLHaltingPolicy:
    """The saved agent with its last layer's halt bias moved to the median margin: it halts on half the rows,
    and many rows sit close to the boundary."""
    agent = RLHaltingPolicy.load(path)
    obs = torch.as_tensor(observations)
    with torch.no_grad():
        if agent.algo == "ppo":
            scores, head = agent.policy.get_distribution(obs).distribution.logits, agent.policy.action_net
        else:
            scores, head = agent.policy.q_net(obs), agent.policy.q_net.q_net[-1]
        head.bias[1] -= (scores[:, 1] - scores[:, 0]).median()
    return agent


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_act_gives_exactly_sb3_predicts_actions(algo: str, saved_rl: dict[str, tuple[RLHaltingPolicy, Path]],
                                                observations: np.ndarray) -> None:  # fmt: skip
    """The batched forward gives SB3's deterministic predict, on the trained agent and on one that halts half the
    time; any batch size, 0 and 1 rows included (SB3's predict fails on 0 rows)."""
    policy, path = saved_rl[algo]
    assert np.array_equal(policy.act(observations), policy.model.predict(observations, deterministic=True)[0])
    balanced = _balanced(path, observations)
    expected = balanced.policy.predict(observations, deterministic=True)[0]
    assert 0.3 < expected.mean() < 0.7
    assert np.array_equal(balanced.act(observations), expected)
    assert np.array_equal(balanced.act(observations.astype(np.float64)), expected)
    assert np.array_equal(balanced.act(observations[:1]), expected[:1])
    assert balanced.act(observations[:0]).shape == (0,) and balanced.act(observations[:0]).dtype == np.int64
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        balanced.act(observations[0])
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        balanced.act(observations[:, :8])


def test_algo_must_match_the_model(saved_rl: dict[str, tuple[RLHaltingPolicy, Path]]) -> None:
    dqn = saved_rl["dqn"][0]
    assert RLHaltingPolicy(dqn.model).algo == "dqn" and RLHaltingPolicy(dqn.policy).name == "rl_dqn"
    with pytest.raises(ValueError, match="does not match"):
        RLHaltingPolicy(dqn.model, algo="ppo")


def test_step_onehot_round_trip(tmp_path: Path) -> None:
    """step_onehot=True puts StepOneHot in the policy; the saved agent needs nothing else to act alike."""
    path = tmp_path / "onehot"
    policy = train_rl_policy(task="regime-chain", total_timesteps=256, n_envs=4, split="test", progress=False,
                             out=path, hyperparameters={"step_onehot": True})  # fmt: skip
    extractor = policy.model.policy.features_extractor
    assert isinstance(extractor, StepOneHot) and (extractor.column, extractor.max_steps) == (11, 16)
    flat = simulate("regime-chain").observations["summary"][:5].reshape(-1, DIM)  # (5 samples x 16 steps, DIM)
    features = extractor(torch.as_tensor(flat)).numpy()
    np.testing.assert_array_equal(features[:, DIM:], np.tile(np.eye(16, dtype=np.float32), (5, 1)))
    assert json.loads((tmp_path / "onehot.json").read_text())["hyperparameters"]["step_onehot"] is True
    loaded = RLHaltingPolicy.load(tmp_path / "onehot.pt")
    assert isinstance(loaded.policy.features_extractor, StepOneHot)
    assert np.array_equal(loaded.act(flat), policy.act(flat))


def test_learning_rate_end_decays_linearly() -> None:
    """learning_rate_end turns the learning rate into a linear schedule from learning_rate to it."""
    policy = train_rl_policy(task="regime-chain", total_timesteps=64, n_envs=4, split="test", progress=False,
                             hyperparameters={"learning_rate": 1e-3, "learning_rate_end": 0.0})  # fmt: skip
    schedule = policy.model.lr_schedule
    assert schedule(1.0) == pytest.approx(1e-3) and schedule(0.5) == pytest.approx(5e-4) and schedule(0.0) == 0.0


# ---- files that are damaged, or carry code ------------------------------------------------------------


class _Touch:
    """Unpickling this calls ``Path.touch(path)``: the payload of issue 18's finding 2."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.path,)


def _serialized(marker: Path) -> dict[str, str]:
    """An SB3 ``:serialized:`` field whose unpickling touches ``marker``."""
    return {":serialized:": base64.b64encode(cloudpickle.dumps(_Touch(marker))).decode()}


def _copy_agent(source: Path, folder: Path) -> Path:
    folder.mkdir()
    for path in agent_files(source):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder / source.name


def _edit_settings(weights: Path, edit: object) -> None:
    settings = agent_files(weights)[1]
    info = json.loads(settings.read_text())
    edit(info)
    settings.write_text(json.dumps(info))


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_a_payload_planted_in_the_zip_never_runs(algo: str, saved_rl: dict[str, tuple[RLHaltingPolicy, Path]],
                                                 tmp_path: Path) -> None:  # fmt: skip
    agent = _copy_agent(saved_rl[algo][1], tmp_path / "agent")
    export, marker = agent_files(agent)[2], tmp_path / "pwned"
    planted = export.with_name("planted.zip")
    with zipfile.ZipFile(export) as source, zipfile.ZipFile(planted, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "data":
                data = json.dumps({**json.loads(data), "planted": _serialized(marker)}).encode()
            target.writestr(item, data)
    export.write_bytes(planted.read_bytes())
    ALGOS[algo].load(planted)  # SB3's own loader runs the payload: the finding, reproduced
    assert marker.exists()
    marker.unlink()
    for path in (planted, export):
        with pytest.raises(ValueError, match=f"{path.name}' is an SB3 zip.*Load {path.stem}.pt"):
            RLHaltingPolicy.load(path)
    assert RLHaltingPolicy.load(agent).algo == algo  # the weights and settings beside it never open the zip
    assert not marker.exists()


def test_a_payload_planted_in_the_settings_or_weights_never_runs(saved_rl: dict[str, tuple[RLHaltingPolicy, Path]],
                                                                 tmp_path: Path) -> None:  # fmt: skip
    marker = tmp_path / "pwned"
    top = _copy_agent(saved_rl["ppo"][1], tmp_path / "top")
    _edit_settings(top, lambda info: info.update(policy_class=_serialized(marker)))
    nested = _copy_agent(saved_rl["ppo"][1], tmp_path / "nested")
    _edit_settings(nested, lambda info: info["policy"]["kwargs"].update(activation_fn=_serialized(marker)))
    for agent in (top, nested):
        with pytest.raises(ValueError, match=f"{agent.stem}.json holds pickled fields"):
            RLHaltingPolicy.load(agent)
    named = _copy_agent(saved_rl["ppo"][1], tmp_path / "named")
    _edit_settings(named, lambda info: info["policy"]["kwargs"].update(activation_fn="system"))
    with pytest.raises(ValueError, match="activation_fn must be one of"):
        RLHaltingPolicy.load(named)
    weights = _copy_agent(saved_rl["ppo"][1], tmp_path / "weights")
    torch.save({"action_net.weight": _Touch(marker)}, weights)
    torch.load(weights, weights_only=False)  # a plain torch.load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=f"weights .*{weights.name} are missing, corrupt or unsafe"):
        RLHaltingPolicy.load(weights)
    assert not marker.exists()


def test_rl_load_bad_files(saved_rl: dict[str, tuple[RLHaltingPolicy, Path]], tmp_path: Path) -> None:
    """A damaged or missing file gives a ValueError naming it."""
    source = saved_rl["ppo"][1]
    cases = {"truncated": lambda w: w.write_bytes(source.read_bytes()[: source.stat().st_size // 2]),
             "garbage": lambda w: w.write_bytes(b"not a torch file"), "no_weights": Path.unlink,
             "other_net": lambda w: w.write_bytes(saved_rl["dqn"][1].read_bytes())}  # fmt: skip
    for case, damage in cases.items():
        agent = _copy_agent(source, tmp_path / case)
        damage(agent)
        with pytest.raises(ValueError, match=re.escape(str(agent))):
            RLHaltingPolicy.load(agent)
    def replace(old: str, new: str) -> object:
        return lambda settings: settings.write_text(settings.read_text().replace(old, new))

    settings_cases = {"no_settings": Path.unlink, "bad_json": lambda s: s.write_text("{"),
                      "old_format": lambda s: s.write_text(json.dumps({"algo": "ppo", "step_cost": 0.01, "seed": 0})),
                      "bad_algo": replace('"algo": "ppo"', '"algo": "a2c"'),
                      "wrong_algo": replace('"algo": "ppo"', '"algo": "dqn"'),
                      "bad_space": replace('"n": 2', '"n": "two"'), "bad_seed": replace('"seed": 3', '"seed": "3"')}
    for case, damage in settings_cases.items():
        agent = _copy_agent(source, tmp_path / case)
        damage(agent_files(agent)[1])
        with pytest.raises(ValueError, match=re.escape(str(agent_files(agent)[1]))):
            RLHaltingPolicy.load(agent)
    with pytest.raises(ValueError, match=r"missing\.pt"):
        RLHaltingPolicy.load(tmp_path / "missing.pt")


def test_sidecar_names_the_task_not_its_arrays(saved_rl: dict[str, tuple[RLHaltingPolicy, Path]],
                                               tmp_path: Path) -> None:  # fmt: skip
    """Defect 8: a Task passed as meta is refused; train_rl_policy records the task by name."""
    policy, path = saved_rl["ppo"]
    assert json.loads(path.with_suffix(".json").read_text())["task"] == "regime-chain"
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_rl_policy(policy, tmp_path / "agent", task=load_task("regime-chain"))
    assert not any(tmp_path.iterdir())
    task = load_task("regime-chain")
    trained = train_rl_policy(task=task, total_timesteps=64, n_envs=4, split="test", progress=False,
                              out=tmp_path / "from_task")  # fmt: skip
    settings = json.loads((tmp_path / "from_task.json").read_text())
    assert settings["task"] == "regime-chain" and trained.name == "rl_ppo"
    assert len(json.dumps({k: v for k, v in settings.items() if k != "policy"})) < 1000


def test_train_rl_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown algo"):
        train_rl_policy(task="regime-chain", algo="a2c", total_timesteps=64, progress=False, out=tmp_path / "a")
    with pytest.raises(ValueError, match="step_cost"):
        train_rl_policy(task="regime-chain", step_cost=-0.01, total_timesteps=64, progress=False, out=tmp_path / "b")
    with pytest.raises(ValueError, match="step_cost"):
        train_rl_policy(task="regime-chain", step_cost=float("nan"), total_timesteps=64, progress=False)
    with pytest.raises(TypeError, match="activation_fn"):  # a network that could not be saved, before any training
        train_rl_policy(task="regime-chain", total_timesteps=64, n_envs=4, progress=False, out=tmp_path / "c",
                        hyperparameters={"policy_kwargs": {"activation_fn": torch.nn.Softsign}})  # fmt: skip
    assert not any(tmp_path.iterdir())  # refused before any work
