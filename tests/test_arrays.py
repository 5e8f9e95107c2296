"""Any model's tables: ``Rollouts.from_arrays`` (exported per-step outputs) and ``simulate`` of a stepper, checked
against a TRM's own table, on bad input, by content key, in the env (hidden width 0) and live."""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents import ConfidencePolicy, HaltHeadPolicy, evaluate, evaluate_live
from agents.evaluation import halting_steps
from trm_env.rollouts import Rollouts, simulate
from trm_env.stepping import rollout_steps
from trm_env.task import Task

# every array of a table that must match, whatever way the table came
SAME = ("prediction", "correct", "pnl", "profit_weighted_ce", "halt_prob", "label", "difficulty")
SETTINGS = ("layout", "num_classes", "max_steps", "pnl_scale", "horizon", "has_halt_head", "task_name", "split")


def _arrays(task: Task, split: str = "test") -> dict[str, np.ndarray]:
    rows = task.split(split)
    return {"labels": task.labels[rows], "pnl_matrix": task.pnl_matrix[rows], "pnl": task.pnl[rows],
            "difficulty": task.difficulty[rows]}  # fmt: skip


def assert_same_table(ours: Rollouts, theirs: Rollouts, settings: tuple[str, ...] = SETTINGS) -> None:
    """Identical observations, rewards, per-step and per-sample info, bit for bit."""
    assert ours.observations.keys() == theirs.observations.keys()
    for mode in ours.observations:
        np.testing.assert_array_equal(ours.observations[mode], theirs.observations[mode], strict=True)
    assert list(ours.halt_reward) == list(theirs.halt_reward)
    for mode in ours.halt_reward:
        np.testing.assert_array_equal(ours.halt_reward[mode], theirs.halt_reward[mode], strict=True)
    for name in SAME:
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), strict=True)
    for name in settings:
        assert getattr(ours, name) == getattr(theirs, name), name


def test_a_trm_table_rebuilt_from_its_own_arrays_is_identical(ten_class: tuple[Task, Any]) -> None:
    """simulate and from_arrays share one builder: the TRM's logits, halt logits, answer states and pnl give its
    table exactly (no tolerance); only what arrays cannot carry differs: key, index, strategy names."""
    task, model = ten_class
    table = simulate(task, model, split="test", cache_dir=False)
    x = torch.from_numpy(task.features[task.split("test")])
    logits, halt_logits, y = model.rollout(x, return_answers=True)
    rebuilt = Rollouts.from_arrays(logits, **_arrays(task), halt_logits=halt_logits, latent=y, split="test",
                                   task_name=task.name, pnl_scale=model.pnl_scale)  # fmt: skip
    assert table.observations["latent"].shape[-1] > table.observations["summary"].shape[-1]
    assert_same_table(rebuilt, table)
    assert rebuilt.key != table.key and list(rebuilt.index) == list(range(table.num_samples))
    assert rebuilt.strategy_names == tuple(str(i) for i in range(10)) != table.strategy_names


def test_rewards_without_pnl_are_minus_ce_and_pnl_needs_a_matrix() -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(40, 5, 3)).astype(np.float32), rng.integers(0, 3, 40)
    table = Rollouts.from_arrays(logits, labels)
    ce = F.cross_entropy(torch.from_numpy(logits).transpose(1, 2), torch.from_numpy(labels)[:, None].expand(-1, 5),
                         reduction="none").double().numpy()  # fmt: skip
    np.testing.assert_allclose(table.halt_reward["profit_weighted_ce"], -ce, rtol=1e-6)
    np.testing.assert_array_equal(table.halt_reward["correct"], logits.argmax(-1) == labels[:, None])
    assert sorted(table.halt_reward) == ["correct", "profit_weighted_ce"] and np.isnan(table.pnl).all()
    with pytest.raises(ValueError, match=r"reward 'pnl' is not in this table.*pnl matrix"):
        table.halt_reward["pnl"]
    with pytest.raises(ValueError, match="reward 'pnl' is not in this table"):
        evaluate(ConfidencePolicy(0.5), table, reward="pnl")
    assert not table.has_halt_head and (table.halt_prob == 0.5).all() and table.layout["latent"] == slice(11, 11)
    pnl = rng.normal(scale=0.05, size=40).astype(np.float32)
    weighted = Rollouts.from_arrays(logits, labels, pnl=pnl)
    weight = 1 - np.tanh(pnl.astype(np.float64) / 0.05)
    np.testing.assert_allclose(weighted.halt_reward["profit_weighted_ce"], -weight[:, None] * ce, rtol=1e-5)
    matrix = rng.normal(scale=0.05, size=(40, 3)).astype(np.float32)
    priced = Rollouts.from_arrays(logits, labels, pnl_matrix=matrix)
    np.testing.assert_array_equal(priced.pnl, matrix[np.arange(40)[:, None], logits.argmax(-1)].astype(np.float64))
    np.testing.assert_allclose(priced.halt_reward["pnl"], priced.pnl / 0.05)
    both = Rollouts.from_arrays(logits, labels, pnl_matrix=matrix, pnl=matrix[np.arange(40), labels])
    np.testing.assert_array_equal(both.halt_reward["profit_weighted_ce"], priced.halt_reward["profit_weighted_ce"])


LOGITS = np.zeros((4, 3, 2), np.float32)
LABELS = np.array([0, 1, 1, 0])


def _with(array: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    out = array.astype(np.float64).copy()
    out[index] = value
    return out


BAD = [
    (dict(logits=np.zeros((4, 3))), "logits must have shape"),
    (dict(logits=np.zeros((4, 1, 2))), r"logits \(N, K, C\) must hold at least 2 steps"),
    (dict(logits=np.zeros((4, 3, 1)), labels=np.zeros(4, int)), r"logits \(N, K, C\) must hold at least 2 classes"),
    (dict(logits=np.zeros((0, 3, 2)), labels=np.zeros(0, int)), r"logits \(N, K, C\) must hold at least 1 samples"),
    (dict(logits=_with(LOGITS, (1, 2, 0), np.nan)), "logits must be finite"),
    (dict(logits=_with(LOGITS, (0, 0, 1), 1e39)), "logits must be finite"),
    (dict(logits=LOGITS.astype(bool)), "logits must be an array of real numbers"),
    (dict(logits=LOGITS.astype(str)), "logits must be an array of real numbers"),
    (dict(labels=np.array([0, 1, 2, 0])), r"labels must lie in \[0, 1\]"),
    (dict(labels=np.array([0, -1, 1, 0])), r"labels must lie in \[0, 1\]"),
    (dict(labels=np.array([0.0, 1.0, 1.0, 0.0])), "labels must be an array of integers"),
    (dict(labels=np.array([0, 1, 1])), r"labels must have shape \(4,\)"),
    (dict(halt_logits=np.zeros((4, 2))), r"halt_logits must have shape \(4, 3\)"),
    (dict(halt_logits=_with(np.zeros((4, 3)), (0, 0), np.inf)), "halt_logits must be finite"),
    (dict(pnl_matrix=np.zeros((4, 3))), r"pnl_matrix must have shape \(4, 2\)"),
    (dict(pnl_matrix=_with(np.zeros((4, 2)), (3, 1), np.nan)), "pnl_matrix must be finite"),
    (dict(pnl=np.zeros(5)), r"pnl must have shape \(4,\)"),
    (dict(pnl=_with(np.zeros(4), (0,), -np.inf)), "pnl must be finite"),
    (dict(difficulty=np.zeros((4, 1))), r"difficulty must have shape \(4,\)"),
    (dict(difficulty=np.array([1.0, np.nan, 2.0, 3.0])), "difficulty must be finite"),
    (dict(latent=np.full((4, 3, 4), 2.5)), r"latent \(N, K, H\) needs H >= 1 and \|values\| <= sqrt\(H\)"),
    (dict(latent=np.zeros((4, 3, 0))), r"latent \(N, K, H\) needs H >= 1"),
    (dict(split="holdout"), "split must be one of"),
    (dict(task_name=""), "task_name must be a non-empty string"),
    (dict(pnl_scale=0.0), "pnl_scale must be a finite number > 0"),
    (dict(pnl_scale=True), "pnl_scale must be a finite number > 0"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_input_is_refused_naming_the_argument(change: dict[str, Any], message: str) -> None:
    arguments = {"logits": LOGITS, "labels": LABELS, **change}
    with pytest.raises(ValueError, match=message):
        Rollouts.from_arrays(arguments.pop("logits"), arguments.pop("labels"), **arguments)
    Rollouts.from_arrays(LOGITS, LABELS)  # the unchanged arguments are fine


def test_tables_are_keyed_by_content() -> None:
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(30, 4, 5)), rng.integers(0, 5, 30)
    first = Rollouts.from_arrays(logits, labels, split="val")
    assert Rollouts.from_arrays(logits.copy(), labels.copy(), split="val") is first  # one copy per key
    assert Rollouts.from_arrays(torch.from_numpy(logits), torch.from_numpy(labels), split="val").key == first.key
    other_labels = labels.copy()
    other_labels[0] = (labels[0] + 1) % 5
    changed = [Rollouts.from_arrays(logits, other_labels, split="val"), Rollouts.from_arrays(logits, labels),
               Rollouts.from_arrays(logits, labels, split="val", task_name="other"),
               Rollouts.from_arrays(logits, labels, split="val", halt_logits=np.zeros((30, 4))),
               Rollouts.from_arrays(logits, labels, split="val", pnl_scale=0.1)]  # fmt: skip
    assert len({first.key, *(table.key for table in changed)}) == 6


def test_env_views_a_table_of_hidden_width_zero_without_difficulty_or_dates(tmp_path: Any) -> None:
    rng = np.random.default_rng(2)
    table = Rollouts.from_arrays(rng.normal(size=(20, 4, 3)).cumsum(axis=1), rng.integers(0, 3, 20), task_name="mine")
    assert table.difficulty is None and table.date is None and table.layout["latent"] == slice(11, 11)
    for observation in ("summary", "latent"):
        env = gym.make("trm_env/TRMHalting-v0", rollouts=table, observation=observation)
        assert env.observation_space.shape == (11,)
        obs, info = env.reset(seed=0, options={"index": 5})
        np.testing.assert_array_equal(obs, table.observations["summary"][5, 0])
        assert "difficulty" not in info and info["halt_prob"] == 0.5
        obs, reward, terminated, _, info = env.step(1)
        assert terminated and reward == pytest.approx(table.halt_reward["profit_weighted_ce"][5, 0])
    saved = gym.make("trm_env/TRMHalting-RegimeChain-v0", rollouts=table.save(tmp_path / "table"))
    assert saved.unwrapped.core.task_name == "mine"  # an id's task is only a default: the table fixes it
    with pytest.raises(ValueError, match="task='sp500' disagrees with the rollouts given"):
        gym.make("trm_env/TRMHalting-v0", rollouts=table, task="sp500")
    with pytest.raises(ValueError, match="reward 'pnl' is not in this table"):
        gym.make("trm_env/TRMHalting-v0", rollouts=table, reward="pnl")
    vector = gym.make_vec("trm_env/TRMHalting-v0", num_envs=3, rollouts=table)
    assert vector.reset(seed=0)[0].shape == (3, 11)
    loaded = Rollouts.load(tmp_path / "table")
    assert not loaded.has_halt_head and loaded.key == table.key


# ---- simulate with a stepper ------------------------------------------------------------------------------------


class Walk(NamedTuple):
    h: torch.Tensor
    step: torch.Tensor


class Stepper:
    """A plain object with the step protocol: the state drifts from the input towards a fixed projection."""

    max_steps = 5

    def __init__(self, scale: float = 1.0, halt: bool = True, classes: int = 10) -> None:
        self.scale, self.halt, self.classes = scale, halt, classes
        self.weight = torch.from_numpy(np.random.default_rng(3).normal(size=(10, 10)).astype(np.float32))

    def initial_state(self, x: torch.Tensor) -> Walk:
        return Walk(x.clone(), torch.zeros(len(x)))

    def step(self, state: Walk) -> tuple[Walk, torch.Tensor, torch.Tensor | None]:
        h = state.h + self.scale * torch.tanh(state.h @ self.weight + 1.0)
        return Walk(h, state.step + 1), h[:, : self.classes], (h.amax(-1) - 2.0 if self.halt else None)


class Module(torch.nn.Module):
    """An ``nn.Module`` stepper with a latent state: keyed by its weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer, self.head = torch.nn.Linear(10, 10), torch.nn.Linear(10, 10)
        self.max_steps, self.pnl_scale = 4, 0.03

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def step(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.layer(h))
        return h, self.head(h), h[:, 0]

    def latent(self, h: torch.Tensor) -> torch.Tensor:
        return h


def test_simulate_takes_any_stepper_with_the_shared_builder(ten_class: tuple[Task, Any]) -> None:
    task, _ = ten_class
    stepper = Module()
    table = simulate(task, stepper, split="test", cache_dir=False)
    x = torch.from_numpy(task.features[task.split("test")])
    logits, halt_logits, latent = rollout_steps(stepper, x, 4)
    rebuilt = Rollouts.from_arrays(logits, **_arrays(task), halt_logits=halt_logits, latent=latent,
                                   task_name=task.name, pnl_scale=0.03)  # fmt: skip
    assert_same_table(rebuilt, table)
    assert table.layout["latent"] == slice(18, 28) and table.max_steps == 4 and table.has_halt_head
    assert simulate(task, stepper, split="test", cache_dir=False) is table  # a module is keyed by its weights
    with torch.no_grad():
        stepper.head.bias += 1.0
    assert simulate(task, stepper, split="test", cache_dir=False).key != table.key
    assert simulate(task, stepper, split="test", cache_dir=False, key="v2").key != table.key


def test_a_plain_stepper_is_cached_only_under_a_key(ten_class: tuple[Task, Any], tmp_path: Any) -> None:
    task, _ = ten_class
    first, again = (simulate(task, Stepper(), split="val", cache_dir=tmp_path) for _ in range(2))
    assert first is not again and first.key == again.key and not list(tmp_path.iterdir())  # simulated each call
    assert_same_table(first, again)
    keyed = simulate(task, Stepper(), split="val", cache_dir=tmp_path, key="walk-v1")
    assert simulate(task, Stepper(scale=2.0), split="val", cache_dir=tmp_path, key="walk-v1") is keyed  # your word
    assert [p.name for p in tmp_path.iterdir()] == [keyed.key]
    assert simulate(task, Stepper(scale=2.0), split="val", cache_dir=False).key != first.key
    silent = simulate(task, Stepper(halt=False), split="val", cache_dir=False, max_steps=3)
    assert not silent.has_halt_head and (silent.halt_prob == 0.5).all() and silent.max_steps == 3


def test_simulate_refuses_what_a_stepper_cannot_give(ten_class: tuple[Task, Any]) -> None:
    task, _ = ten_class
    no_depth = Stepper()
    no_depth.max_steps = None
    with pytest.raises(ValueError, match="max_steps must be given"):
        simulate(task, no_depth, cache_dir=False)
    with pytest.raises(ValueError, match=r"max_steps must be an integer in 1\.\.5"):
        simulate(task, Stepper(), max_steps=6, cache_dir=False)
    with pytest.raises(TypeError, match="checkpoint must be a path, a TinyRecursiveModel or a stepper"):
        simulate(task, object(), cache_dir=False)
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        simulate(task, Stepper(), key="", cache_dir=False)
    with pytest.raises(ValueError, match="the model gives 4 classes, but task 'ten-class' has 10"):
        simulate(task, Stepper(classes=4), cache_dir=False)


def test_a_stepper_halts_live_where_its_table_says(ten_class: tuple[Task, Any]) -> None:
    task, _ = ten_class
    stepper = Module()
    table = simulate(task, stepper, split="test", cache_dir=False)
    for policy in (ConfidencePolicy(0.3), HaltHeadPolicy(0.6)):
        live = evaluate_live(policy, task, "test", checkpoint=stepper, batch_size=7)
        np.testing.assert_array_equal(live["halt_step"].to_numpy(), halting_steps(policy, table))
        frame = evaluate(policy, table)
        np.testing.assert_array_equal(live["prediction"].to_numpy(), frame["prediction"].to_numpy())
        # the CE of the same logits, computed on batches of another shape, may differ in its last float32 bit
        np.testing.assert_allclose(live["episode_return"], frame["episode_return"], rtol=1e-6)


def test_every_learner_and_ppo_fit_on_a_table_of_hidden_width_zero() -> None:
    """No hidden state: the post-hoc heads, fitted-Q and PPO train on the summary columns alone."""
    from agents.learners import LEARNERS, fit_learners
    from agents.rl import train_rl_policy

    rng = np.random.default_rng(4)
    tables = {split: Rollouts.from_arrays(rng.normal(size=(64, 4, 3)).cumsum(axis=1), rng.integers(0, 3, 64),
                                          split=split, task_name="mine") for split in ("halt", "val")}  # fmt: skip
    for family in LEARNERS:
        points = fit_learners(family, tables["halt"], tables["val"], 0.01, [0], [(0.2, 0.01)], [0.01])
        steps = halting_steps(points[0], tables["val"])
        assert points[0].name == family and steps.shape == (64,) and set(steps) <= {1, 2, 3, 4}, family
    agent = train_rl_policy("mine", rollouts=tables["halt"], total_timesteps=256, n_envs=4, progress=False,
                            hyperparameters={"batch_size": 32})  # fmt: skip
    assert set(halting_steps(agent, tables["val"])) <= {1, 2, 3, 4}
