"""Halting policies, RL training and evaluation for the ``trm_env`` halting environment.

>>> from agents import HaltHeadPolicy, evaluate
>>> frame = evaluate(HaltHeadPolicy(0.5), task="regime-chain")  # doctest: +SKIP
"""

from agents.evaluation import curve_from_episodes, evaluate, evaluate_policies, halting_curve, summarize
from agents.policies import (
    POLICY_NAMES,
    ConfidencePolicy,
    FixedDepthPolicy,
    HaltHeadPolicy,
    HaltingPolicy,
    OraclePolicy,
    RandomPolicy,
    RLHaltingPolicy,
    make_policy,
)
from agents.rl import train_rl_policy

__all__ = [
    "POLICY_NAMES",
    "ConfidencePolicy",
    "FixedDepthPolicy",
    "HaltHeadPolicy",
    "HaltingPolicy",
    "OraclePolicy",
    "RLHaltingPolicy",
    "RandomPolicy",
    "curve_from_episodes",
    "evaluate",
    "evaluate_policies",
    "halting_curve",
    "make_policy",
    "summarize",
    "train_rl_policy",
]
