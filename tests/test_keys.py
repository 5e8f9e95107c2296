"""What the content keys cover: the rollout cache key (every input of a table, the code and the device) and the
study's stage keys (every setting and input a stage's artifact depends on, and nothing it does not)."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import inspect
import json
from collections import OrderedDict
from dataclasses import fields, replace
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import trm_env.rollouts as rollouts_module
from agents.joint import JOINT_FAMILIES
from agents.learners import LEARNERS
from agents.stages import GROUPS
from trm_env.loss import profit_weighted_ce
from trm_env.model import TinyRecursiveModel
from trm_env.observation import observation_table
from trm_env.rollouts import Rollouts, simulate
from trm_env.stepping import step_outcome
from trm_env.task import Task

ROOT = Path(__file__).resolve().parents[1]
TASK = "regime-chain"

# ---- the rollout cache key ---------------------------------------------------------------------------------------


def _model_variant(model: TinyRecursiveModel, change: str) -> TinyRecursiveModel:
    other = copy.deepcopy(model)
    if change == "weights":
        with torch.no_grad():
            other.task_head.bias += 0.3
    elif change == "buffers":  # same parameters, another fixed starting latent
        other.z_init += 0.5
    elif change == "config":  # same weights, one more latent update per step
        other.n_latent += 1
        other.config = {**other.config, "n_latent": other.n_latent}
    elif change == "pnl_scale":  # same weights and config, another profit-weight scale
        other.train_config = {**other.train_config, "pnl_scale": 0.07}
    return other


def _task_variants(task: Task) -> dict[str, Task]:
    """The task with one input changed at a time (each one changes the test table)."""
    test = task.split("test")
    features, labels = task.features.copy(), task.labels.copy()
    features[test[0]] += 1.0
    labels[test[0]] = (labels[test[0]] + 1) % task.num_classes
    ones = np.ones(len(task.labels), dtype=np.int64)
    return {
        "name": replace(task, name="ten-class-renamed"),
        "features": replace(task, features=features),
        "labels": replace(task, labels=labels),
        "pnl": replace(task, pnl=task.pnl * 2),
        "pnl_matrix": replace(task, pnl_matrix=task.pnl_matrix * 2),
        "dates": replace(task, dates=np.datetime64("2001-01-01") + task.dates.astype("timedelta64[D]")),
        "difficulty": replace(task, difficulty=task.difficulty + 1),
        "splits": replace(task, splits={**task.splits, "test": test[1:]}),
        "reference_steps": replace(task, reference_steps={"rule": ones}),
        "reference_values": replace(task, reference_steps={"rule": 2 * ones}),
        "reference_names": replace(task, reference_steps={"other_rule": ones}),
        "horizon": replace(task, params={**task.params, "horizon": 3}),
        "strategy_names": replace(task, strategy_names=task.strategy_names[::-1]),
    }


def _same_table(a: Rollouts, b: Rollouts) -> bool:
    """Every field but the key equal (arrays exactly, NaN equal to NaN)."""

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            return (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.shape == y.shape
                    and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))  # fmt: skip
        return x == y

    return all(same(getattr(a, f.name), getattr(b, f.name)) for f in fields(Rollouts) if f.name != "key")


def test_every_input_of_a_table_is_in_its_key(ten_class: tuple[Task, TinyRecursiveModel], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Each variant differs from the base in one input (the model's weights, buffers, config or pnl scale, any task
    array, its name, splits or references, the split, K): each gets a key of its own, and the table the caches
    return is the one a fresh simulation gives."""
    task, model = ten_class
    variants: dict[str, tuple[Task, TinyRecursiveModel, dict[str, Any]]] = {"base": (task, model, {})}
    models = ("weights", "buffers", "config", "pnl_scale")
    variants.update({name: (task, _model_variant(model, name), {}) for name in models})
    variants.update({name: (other, model, {}) for name, other in _task_variants(task).items()})
    variants.update({"split": (task, model, {"split": "val"}), "max_steps": (task, model, {"max_steps": 4})})
    monkeypatch.setattr(rollouts_module, "_MEMORY", OrderedDict())
    tables = {name: simulate(t, m, **{"split": "test", **kw, "cache_dir": tmp_path})
              for name, (t, m, kw) in variants.items()}  # fmt: skip
    keys = {name: table.key for name, table in tables.items()}
    assert len(set(keys.values())) == len(keys), keys
    for name, (t, m, kw) in variants.items():
        monkeypatch.setattr(rollouts_module, "_MEMORY", OrderedDict())  # no cache at all: a fresh simulation
        fresh = simulate(t, m, **{"split": "test", **kw, "cache_dir": False})
        assert fresh.key == keys[name] and _same_table(tables[name], fresh), name
    assert not _same_table(tables["base"], tables["pnl_scale"]) and tables["pnl_scale"].pnl_scale == 0.07
    again = simulate(task, model, split="test", cache_dir=tmp_path)  # the same inputs: the same key
    assert again.key == keys["base"]


def test_the_task_key_covers_every_array_and_the_chunking(ten_class: tuple[Task, TinyRecursiveModel]) -> None:
    task, _ = ten_class
    keys = {name: other.key() for name, other in _task_variants(task).items()
            if name not in ("horizon", "strategy_names")}  # not arrays: the rollout key adds them
    keys["chunks"] = replace(task, n_chunks=2, chunk_dim=5).key()
    keys["chunk_dim"] = replace(task, n_chunks=5, chunk_dim=2).key()
    keys["no_difficulty"] = replace(task, difficulty=None).key()
    assert task.key() not in keys.values() and len(set(keys.values())) == len(keys), keys
    assert replace(task).key() == task.key()  # the same content: the same key, whatever the object


def test_the_code_a_table_depends_on_is_in_its_key(ten_class: tuple[Task, TinyRecursiveModel], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The modules that make a table (simulation, observation, rewards, the model, its loss) are hashed into the
    key: another version of that code gets another key."""
    task, model = ten_class
    makers = (simulate, observation_table, step_outcome, TinyRecursiveModel, profit_weighted_ce)
    files = {Path(inspect.getfile(maker)).name for maker in makers}
    assert files <= set(rollouts_module._CODE)
    package = Path(rollouts_module.__file__).parent
    expected = hashlib.sha256(b"".join((package / name).read_bytes() for name in rollouts_module._CODE))
    assert rollouts_module._CODE_DIGEST.hexdigest() == expected.hexdigest()
    base = simulate(task, model, split="test", cache_dir=False).key
    monkeypatch.setattr(rollouts_module, "_CODE_DIGEST", hashlib.sha256(b"another version of the code"))
    assert simulate(task, model, split="test", cache_dir=False).key != base


def test_a_table_made_on_an_accelerator_is_keyed_apart(ten_class: tuple[Task, TinyRecursiveModel],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """``device="cuda"`` (faked here: the rollout itself runs on the CPU) gets its own key, never the CPU table."""
    task, model = ten_class
    cpu = simulate(task, model, split="test", cache_dir=False)
    real = rollouts_module._simulate
    monkeypatch.setattr(rollouts_module, "resolve_device", lambda device: SimpleNamespace(type=str(device)))
    monkeypatch.setattr(rollouts_module, "_simulate",
                        lambda m, t, split, k, key, where: real(m, t, split, k, key, torch.device("cpu")))
    cuda = simulate(task, model, split="test", device="cuda", cache_dir=False)
    assert cuda.key != cpu.key and cuda is not cpu
    assert simulate(task, model, split="test", device="cpu", cache_dir=False).key == cpu.key


# ---- the study's stage keys --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("experiments_run_keys", ROOT / "experiments" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(content)  # the keys read the file's digest only: nothing is loaded here
    return folder


def _planned_keys(run_module: ModuleType, out: Path, changes: dict[str, Any], checkpoint: bytes = b"model",
                  chosen: dict[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """The keys of every stage one task and TRM seed plan (RL agent, each evaluation group, the live stage),
    by stage ("agent" for the RL agent, whatever its cost and seed)."""
    config = {**run_module.load_config("quick", False), "tasks": [TASK], "trm_seeds": [0], **changes}
    run = run_module.Run(out, config, False, SimpleNamespace())
    folder = _checkpoint(out.parent / "checkpoints" / hashlib.sha256(checkpoint).hexdigest()[:8], checkpoint)
    rl = run.rl_agents(TASK, 0, folder)
    run.evaluations(TASK, 0, folder, rl)
    run.live(TASK, {0: folder}, chosen or {"fixed_depth": 4.0, "fitted_q": 0.0}, {0: rl})
    planned = {}
    for name, _, key, *_ in run.pending:
        stage = "agent" if name.startswith("rl/") else "live" if name.startswith("live/") else name.split("/")[-1]
        planned[stage] = json.loads(json.dumps(key))
    run.bar.close()
    return planned


EVALUATIONS = tuple(g for g in GROUPS if g not in JOINT_FAMILIES)  # rules, rl, every learner (joint: own TRMs)
EPISODES = tuple(f"episodes:{g}" for g in EVALUATIONS)
EVERYTHING = ("rl", *EPISODES, "live")
# config change -> the stages whose key must change, and those whose key may (the evaluation settings are one
# dict for every group); every other stage's key must stay
CHANGES: list[tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]] = [
    ({"eval_step_cost": 0.02}, (*EPISODES, "live"), ()),
    ({"random_seeds": [1]}, ("episodes:rules", "live"), EPISODES),
    ({"learner_seeds": [1]}, ("episodes:continuation_head", "live"), EPISODES),
    ({"ponder_variants": [[0.3, 0.01]]}, ("episodes:ponder", "live"), EPISODES),
    ({"act_taus": [0.05]}, ("episodes:act", "live"), EPISODES),
    ({"total_timesteps": 1000}, ("rl", "episodes:rl", "live"), ()),
    ({"n_envs": 4}, ("rl", "episodes:rl", "live"), ()),
    ({"hyperparameters": {"learning_rate": 1e-4}}, ("rl", "episodes:rl", "live"), ()),
    ({"step_costs": [0.02]}, ("rl", "episodes:rl", "live"), ()),
    ({"rl_seeds": [1]}, ("rl", "episodes:rl", "live"), ()),
    ({"timing_samples": 99}, ("live",), ()),
    ({"timing_rounds": 2}, ("live",), ()),
    ({"latency_samples": 7}, ("live",), ()),
    ({"task_kwargs": {TASK: {"seed": 5}}}, EVERYTHING, ()),
]


def _changed(base: dict[str, Any], other: dict[str, Any]) -> set[str]:
    names = {"agent": "rl", "live": "live", **{g: f"episodes:{g}" for g in EVALUATIONS}}
    assert base.keys() == other.keys()
    return {names[stage] for stage in base if base[stage] != other[stage]}


@pytest.mark.parametrize(("changes", "must", "may"), CHANGES, ids=[next(iter(c)) for c, _, _ in CHANGES])
def test_stage_keys_follow_the_config(run_module: ModuleType, tmp_path: Path, changes: dict[str, Any],
                                      must: tuple[str, ...], may: tuple[str, ...]) -> None:  # fmt: skip
    """A rerun redoes exactly the stages whose inputs changed: each config entry reaches the keys of the stages
    that use it (the RL group's evaluation and the live stage through the agents' keys), and no other."""
    base = _planned_keys(run_module, tmp_path / "a" / "run", {})
    changed = _changed(base, _planned_keys(run_module, tmp_path / "b" / "run", changes))
    assert set(must) <= changed <= set(must) | set(may), changed


def test_stage_keys_follow_the_model_the_grids_and_the_choices(run_module: ModuleType, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    base = _planned_keys(run_module, tmp_path / "a" / "run", {})
    other_model = _planned_keys(run_module, tmp_path / "b" / "run", {}, checkpoint=b"retrained model")
    assert _changed(base, other_model) == set(EVERYTHING)
    chosen = _planned_keys(run_module, tmp_path / "c" / "run", {}, chosen={"fixed_depth": 5.0, "fitted_q": 0.0})
    assert _changed(base, chosen) == {"live"}
    monkeypatch.setattr(run_module, "GRIDS", {**run_module.GRIDS, "act": (0.5,)})
    grids = _planned_keys(run_module, tmp_path / "d" / "run", {})
    assert {f"episodes:{g}" for g in LEARNERS} <= _changed(base, grids) <= set(EVERYTHING) - {"rl"}
    monkeypatch.setattr(run_module, "DEFAULT_PARAMS", {**run_module.DEFAULT_PARAMS, "fixed_depth": (1, 2)})
    rules = _planned_keys(run_module, tmp_path / "e" / "run", {})
    assert "episodes:rules" in _changed(grids, rules) and "rl" not in _changed(grids, rules)
    algo = run_module.CONFIGS["quick"]["algo"]
    defaults = {**run_module.HYPERPARAMETERS, algo: {**run_module.HYPERPARAMETERS[algo], "gamma": 0.5}}
    monkeypatch.setattr(run_module, "HYPERPARAMETERS", defaults)
    assert _changed(rules, _planned_keys(run_module, tmp_path / "f" / "run", {})) == {"rl", "episodes:rl", "live"}
