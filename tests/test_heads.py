"""The post-hoc halting objectives against direct computations on tiny tables, and that each learns."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import hand_rollouts

from agents import evaluate, evaluate_by_stepping, evaluate_policies
from agents.heads import (
    ACT_EPSILON,
    HALT_BIAS,
    HEAD_SETTINGS,
    ACTPolicy,
    ContinuationHeadPolicy,
    CorrectHeadPolicy,
    HeadSettings,
    PonderPolicy,
    act_distribution,
    continuation_target,
    ponder_distribution,
)
from agents.learners import fit_learners
from agents.policies import EntropyExitPolicy, KLExitPolicy, PatiencePolicy, make_policy
from trm_env.rollouts import simulate


def test_ponder_distribution_sums_to_one_with_the_forced_halt() -> None:
    lambdas = torch.tensor([[0.5, 0.5, 0.5, 0.3], [0.0, 0.0, 0.0, 0.0], [1.0, 0.2, 0.2, 0.2]])
    p = ponder_distribution(lambdas)
    expected = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(p, expected)
    random = ponder_distribution(torch.rand(50, 16, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(random.sum(dim=1), torch.ones(50))


def test_act_remainder_by_hand() -> None:
    units = torch.tensor([[0.3, 0.5, 0.4, 0.1], [0.1, 0.1, 0.1, 0.1], [0.995, 0.5, 0.5, 0.5]])
    p, halt, remainder = act_distribution(units)
    # row 0: 0.3 + 0.5 + 0.4 >= 0.99 first at step 3: R = 1 - 0.8; row 1 never reaches it: forced at K
    torch.testing.assert_close(halt, torch.tensor([3, 4, 1]))
    torch.testing.assert_close(remainder, torch.tensor([0.2, 0.7, 1.0]))
    torch.testing.assert_close(p, torch.tensor([[0.3, 0.5, 0.2, 0.0], [0.1, 0.1, 0.1, 0.7], [1.0, 0.0, 0.0, 0.0]]))
    assert ACT_EPSILON == 0.01


def test_continuation_target_against_brute_force() -> None:
    rewards = np.random.default_rng(0).normal(size=(200, 6))
    for cost in (0.0, 0.1, 0.5):
        brute = np.array([[all(row[t] >= row[s] - cost * (s - t) for s in range(t + 1, 6)) for t in range(6)]
                          for row in rewards])  # fmt: skip
        np.testing.assert_array_equal(continuation_target(rewards, cost), brute)


def _known_table() -> tuple[object, object]:
    """The answer is wrong (reward -2) before a random step, right (0) at it, and drifts (-0.5) after it.

    Two flags in the observation mark that step and every step from it on, so halting exactly there is
    optimal and fully visible.
    """
    rng = np.random.default_rng(0)
    n, k = 600, 6
    arrive = rng.integers(1, k + 1, size=n)[:, None]
    step = np.arange(1, k + 1)[None, :]
    flags = np.stack([step == arrive, step >= arrive], axis=-1).astype(float)
    rewards = np.where(step < arrive, -2.0, np.where(step == arrive, 0.0, -0.5))
    tables = hand_rollouts(rewards[:300], flags[:300]), hand_rollouts(rewards[300:], flags[300:])
    for table in tables:  # the flags are also the "probability" columns, which the summary observation holds
        table.observations["summary"][..., :2] = table.observations["latent"][..., -2:]
        table.correct[...] = table.halt_reward["pnl"] == 0
    return tables


@pytest.mark.parametrize(
    ("build", "knob"),
    [
        (lambda: CorrectHeadPolicy(0.5), 0.5),
        (lambda: ContinuationHeadPolicy(0.5), 0.5),
        (lambda: PonderPolicy(0.5), 0.5),
        (lambda: ACTPolicy(0.001), None),
    ],
)
def test_each_head_learns_the_known_rule(build, knob) -> None:  # type: ignore[no-untyped-def]
    """Before fitting, a head with bias -5 never halts (it drifts to -0.5 by K); after, it halts at the flag,
    close to the oracle."""
    halt, test = _known_table()
    policy = build().fit(halt, step_cost=0.01)
    untrained = type(policy)(policy.param)
    untrained._fit(halt, lambda logits, rows: logits.sum() * 0.0)  # zero gradient: the initial head
    initial = evaluate(untrained, test, step_cost=0.01)["episode_return"].mean()
    learned = evaluate(policy, test, step_cost=0.01)["episode_return"].mean()
    oracle = test.returns("pnl", 0.01).max(axis=1).mean()
    assert initial < oracle - 0.3 and learned > oracle - 0.02, (initial, learned, oracle)


def test_stateful_heads_agree_on_the_table_and_in_the_env() -> None:
    halt, val = simulate("regime-chain", split="halt"), simulate("regime-chain", split="val")
    policies = [PonderPolicy(0.3).fit(halt), ACTPolicy(0.01).fit(halt), CorrectHeadPolicy(0.9).fit(halt)]
    table = evaluate_policies(policies, val)
    stepped = pd.concat([evaluate_by_stepping(p, "regime-chain", "val") for p in policies], ignore_index=True)
    np.testing.assert_array_equal(table["halt_step"], stepped["halt_step"])
    assert table["halt_step"].nunique() > 3


def test_zero_shot_rules_on_crafted_observations() -> None:
    table = simulate("regime-chain")
    layout, rows = table.layout, np.zeros((4, 16), dtype=np.float32)
    rows[:, layout["kl_prev"]] = [[0.0], [1e-4], [6e-4], [1.0]]
    rows[:, layout["entropy_delta"]] = [[-1e-4], [2e-3], [-2e-3], [0.0]]
    rows[:, layout["stable_steps"]] = [[1], [4], [5], [9]]
    for policy, expected in ((KLExitPolicy(5e-4), [1, 1, 0, 0]), (EntropyExitPolicy(1e-3), [1, 0, 0, 1]),
                             (PatiencePolicy(4), [0, 0, 1, 1])):  # fmt: skip
        policy.bind(table)
        assert policy.act(rows).tolist() == expected, policy.name
    assert make_policy("patience", 3.0).param == 3
    for bad in (lambda: KLExitPolicy(-1.0), lambda: PatiencePolicy(0), lambda: make_policy("patience", 2.5)):
        with pytest.raises(ValueError):
            bad()


@pytest.mark.parametrize("cost", [0.01, 0.1])
def test_patience_is_pabee_on_hand_made_predictions(cost: float) -> None:
    """Patience p halts at the first step where the last p + 1 predictions agree (PABEE), else at K."""
    table = simulate("regime-chain")
    for p in (1, 3):
        steps = evaluate(PatiencePolicy(p), table, step_cost=cost)["halt_step"].to_numpy()
        for row, step in itertools.islice(zip(table.prediction, steps, strict=True), 300):
            agree = [t for t in range(p + 1, 17) if len(set(row[t - p - 1 : t])) == 1]
            assert step == (agree[0] if agree and agree[0] < 16 else 16)


def test_head_settings_shape_the_fit() -> None:
    """Width, subset size, Adam steps and learning rate each reach the fit: one Adam step moves the output bias
    from -5 by the learning rate (Adam's first step is lr times the gradient's sign)."""
    halt, val = _known_table()
    settings = HeadSettings(hidden=4, steps=1, lr=0.125, max_samples=50)
    head = CorrectHeadPolicy(0.5, seed=3, settings=settings).fit(halt, step_cost=0.01)
    assert head.net[0].out_features == 4 and head.with_param(0.7).settings is settings
    assert abs(head.net[-1].bias.detach().item() - HALT_BIAS) == pytest.approx(0.125, rel=1e-4)
    rows = np.sort(np.random.default_rng(3).choice(300, 50, replace=False))
    subset = halt.observations["summary"][rows].reshape(-1, halt.observations["summary"].shape[-1])
    np.testing.assert_allclose(head._scale[0], subset.astype(np.float64).mean(axis=0))
    points = fit_learners("act", halt, val, 0.01, [0], act_taus=[0.01], settings=HeadSettings(hidden=3, steps=2))
    assert points[0].net[0].out_features == 3 and points[0].settings.steps == 2
    assert PonderPolicy(0.5).settings == HEAD_SETTINGS["ponder"]
    for bad in ({"hidden": 0}, {"steps": 2.5}, {"lr": 0.0}, {"lr": float("inf")}, {"max_samples": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            HeadSettings(**bad)
    with pytest.raises(TypeError, match="settings"):
        ACTPolicy(0.01, settings={"hidden": 4})  # type: ignore[arg-type]


def test_head_defaults_are_the_documented_search_choice() -> None:
    """Each head trains by default with its own HEAD_SETTINGS entry, the one docs/heads_tuning.md records."""
    doc = (Path(__file__).parents[1] / "docs" / "heads_tuning.md").read_text()
    chosen = {m[0]: HeadSettings(int(m[2]), int(m[3]), float(m[1]), int(m[4]))
              for m in re.findall(r"^\| chosen (\w+) \| ([\d.]+) \| (\d+) \| (\d+) \| (\d+) \|", doc, re.M)}
    assert chosen == HEAD_SETTINGS and len(chosen) == 4
    for cls in (CorrectHeadPolicy, ContinuationHeadPolicy, PonderPolicy, ACTPolicy):
        assert cls(0.5).settings == HEAD_SETTINGS[cls.name]
    halt, _ = _known_table()
    assert CorrectHeadPolicy(0.5).fit(halt, step_cost=0.01).net[0].out_features == HEAD_SETTINGS["correct_head"].hidden
