"""Joint halting end to end: the q_halt model's outputs, old checkpoints, the config, the joint rules on a table
and live, and short trainings on tasks whose answer is known that move each objective's halting as expected."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import hand_rollouts, ten_class_task

from agents import evaluate, evaluate_by_stepping, evaluate_live
from agents.joint import ACTJointPolicy, PonderJointPolicy, QHaltJointPolicy, joint_policies
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import shipped_checkpoint, simulate
from trm_env.task import Task, split_by_fractions
from trm_env.training import TrainConfig, train


def test_q_halt_model_emits_q_halt_minus_q_continue(tmp_path) -> None:
    model = TinyRecursiveModel(input_dim=5, hidden_dim=16, max_steps=3, halt_outputs=2)
    torch.testing.assert_close(model.halt_head.bias, torch.tensor([-5.0, -5.0]))  # TRM's initialisation
    assert not model.halt_head.weight.detach().any()
    with torch.no_grad():
        model.halt_head.weight.normal_(generator=torch.Generator().manual_seed(0))
        model.halt_head.bias.copy_(torch.tensor([0.7, -0.2]))
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    _, halt, y = model.rollout(x, return_answers=True)
    q = model.halt_head(y).detach()
    torch.testing.assert_close(halt, q[..., 0] - q[..., 1])
    model.save(tmp_path / "model.pt")
    loaded = TinyRecursiveModel.load(tmp_path)
    assert loaded.config["halt_outputs"] == 2
    torch.testing.assert_close(loaded.rollout(x)[1], halt)


def test_old_checkpoints_load_with_one_halt_output() -> None:
    """A one-output model's config has no halt_outputs key (so its checkpoint is as before); shipped ones load."""
    assert "halt_outputs" not in TinyRecursiveModel(input_dim=5, hidden_dim=8).config
    model = TinyRecursiveModel.load(shipped_checkpoint("sp500"))
    assert "halt_outputs" not in model.config and model.halt_head.out_features == 1
    with pytest.raises(ValueError, match="halt_outputs"):
        TinyRecursiveModel(input_dim=5, halt_outputs=3)


def test_halting_config_is_checked_and_a_flag() -> None:
    assert TrainConfig().halting == "bce"
    with pytest.raises(ValueError, match=r"halting must be one of \['bce', 'ponder', 'act', 'q_halt'\]"):
        TrainConfig(halting="pondernet").validate()
    with pytest.raises(ValueError, match="tau"):
        TrainConfig(halting="act", act_tau=-0.1).validate()
    spec = importlib.util.spec_from_file_location("train_trm", Path(__file__).parents[1] / "experiments/train_trm.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.parse_args(["--halting", "q_halt", "--exploration", "0.3"]).halting == "q_halt"
    assert shipped_checkpoint("sp500", 2, "ponder").parts[-2:] == ("sp500-ponder", "seed2")
    assert shipped_checkpoint("sp500", 2) == shipped_checkpoint("sp500", 2, "bce")


def _table_with_halt_probs(probs: list[list[float]]):
    table = hand_rollouts(np.zeros((len(probs), len(probs[0]))))
    for mode in ("summary", "latent"):
        table.observations[mode][..., table.layout["halt_prob"]] = np.asarray(probs, dtype=np.float32)[..., None]
    return table


def test_joint_rules_on_a_hand_table() -> None:
    table = _table_with_halt_probs([[0.3, 0.3, 0.3, 0.3], [0.05, 0.6, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]])
    # ponder's cumulative p: row 0 0.3, 0.51, 0.657, 0.76; row 1 0.05, 0.62, 0.658; ACT's sum: row 0 0.3, 0.6, 0.9
    cases = [(PonderJointPolicy(0.5), [2, 2, 4]), (PonderJointPolicy(0.7), [4, 4, 4]),
             (PonderJointPolicy(0.65), [3, 3, 4]), (ACTJointPolicy(), [4, 4, 4]), (ACTJointPolicy(0.5), [2, 2, 4]),
             (ACTJointPolicy(0.65), [3, 2, 4]),
             (QHaltJointPolicy(0.5), [4, 2, 4]), (QHaltJointPolicy(0.2), [1, 2, 4])]  # fmt: skip
    for policy, expected in cases:
        assert evaluate(policy, table)["halt_step"].tolist() == expected, repr(policy)
        assert evaluate_by_stepping(policy, table, "halt")["halt_step"].tolist() == expected, repr(policy)
    assert [p.param for p in joint_policies("act_joint")][-1] == pytest.approx(0.99)
    with pytest.raises(ValueError, match="unknown joint family"):
        joint_policies("ponder")
    with pytest.raises(ValueError, match="q must lie"):
        PonderJointPolicy(1.5)


def _config(**fields) -> TrainConfig:
    """A few seconds of training: small batches and a short EMA so that 8 epochs of 300 samples move the heads."""
    return TrainConfig(**{**dict(task="hand", hidden_dim=16, max_steps=6, epochs=8, batch_size=32, lr=0.01,
                                 ema_decay=0.5, pnl_scale=0.03, patience=10), **fields})  # fmt: skip


def _rule_steps(task: Task, **fields) -> float:
    """Mean val halting step of the objective's own rule after a few seconds of joint training."""
    _, metrics = train(_config(**fields), task=task, progress=False, tensorboard=False)
    return metrics["val"]["halt_rule"]["mean_steps"]


@pytest.fixture(scope="module")
def ten_class_joint() -> tuple[Task, TinyRecursiveModel]:
    task = ten_class_task()
    model, _ = train(_config(halting="ponder", ponder_lambda_p=0.1, ponder_beta=1.0), task=task, progress=False,
                     tensorboard=False)  # fmt: skip
    return task, model


def test_ponder_halts_earlier_under_a_prior_with_larger_lambda_p(ten_class_joint) -> None:
    task = ten_class_joint[0]
    early = _rule_steps(task, halting="ponder", ponder_lambda_p=0.9, ponder_beta=1.0)
    late = _rule_steps(task, halting="ponder", ponder_lambda_p=0.1, ponder_beta=1.0)
    assert early + 1 <= late, (early, late)


def test_act_halts_earlier_under_a_larger_ponder_cost() -> None:
    task = ten_class_task()
    early = _rule_steps(task, halting="act", act_tau=0.3)
    late = _rule_steps(task, halting="act", act_tau=0.0)
    assert early + 2 <= late, (early, late)


def stream_task(answer_step: int, n: int = 1000, k: int = 4, classes: int = 10) -> Task:
    """Evidence arrives one chunk per step; only the chunk of ``answer_step`` (1-based) carries the label."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, size=n)
    chunks = 0.3 * rng.standard_normal((n, k, classes))
    chunks[np.arange(n), answer_step - 1] += 2 * np.eye(classes)[labels]
    features = np.concatenate([rng.standard_normal((n, 2)), chunks.reshape(n, -1)], axis=1).astype(np.float32)
    size = 0.02 * np.exp(0.5 * rng.standard_normal(n))
    pnl_matrix = (-size[:, None] * rng.uniform(0.2, 1.0, size=(n, classes))).astype(np.float32)
    pnl_matrix[np.arange(n), labels] = size
    return Task(name=f"stream-{answer_step}", features=features, labels=labels.astype(np.int64),
                pnl=pnl_matrix[np.arange(n), labels], pnl_matrix=pnl_matrix, dates=np.arange(n),
                splits=split_by_fractions(n, (0.5, 0.2, 0.1, 0.2)), strategy_names=tuple(map(str, range(classes))),
                feature_names=tuple(f"f{i}" for i in range(features.shape[1])), n_chunks=k,
                chunk_dim=classes)  # fmt: skip


def test_q_halt_learns_to_wait_for_the_step_that_carries_the_answer() -> None:
    """The answer arrives at step 3 of 4: Q-halting (with exploration) halts there or later; at step 1, at once."""
    fields = dict(halting="q_halt", exploration=0.5, max_steps=4)
    late = _rule_steps(stream_task(3), **fields)
    early = _rule_steps(stream_task(1), **fields)
    assert late >= 3.0 and early <= 2.0, (late, early)


def test_joint_rules_run_live_as_on_the_table(ten_class_joint) -> None:
    task, model = ten_class_joint
    table = simulate(task, model, split="test", cache_dir=False)
    for policy in (PonderJointPolicy(0.6), ACTJointPolicy(0.5), QHaltJointPolicy(0.3)):
        expected = evaluate(policy, table)
        assert expected["halt_step"].nunique() > 1, repr(policy)  # rows halt at different steps: the batch churns
        for batch_size in (7, 64):
            live = evaluate_live(policy, task, checkpoint=model, batch_size=batch_size)
            pd.testing.assert_frame_equal(live[["index", "halt_step", "prediction", "correct"]],
                                          expected[["index", "halt_step", "prediction", "correct"]])  # fmt: skip
