"""Halting policies, RL training and evaluation over a ``trm_env`` rollout table.

>>> from agents import HaltHeadPolicy, evaluate
>>> frame = evaluate(HaltHeadPolicy(0.5), task="regime-chain")  # doctest: +SKIP
"""

from agents.calibrate import Calibration, calibrate
from agents.curves import curve_from_episodes, halting_curve, summarize
from agents.evaluation import evaluate, evaluate_by_stepping, evaluate_policies, halting_steps
from agents.live import evaluate_live
from agents.policies import (
    POLICY_NAMES,
    ConfidencePolicy,
    FixedDepthPolicy,
    HaltHeadPolicy,
    HaltingPolicy,
    OraclePolicy,
    PrivilegedPolicy,
    RandomPolicy,
    make_policy,
)
from agents.rl import RLHaltingPolicy, train_rl_policy

__all__ = [
    "POLICY_NAMES",
    "Calibration",
    "ConfidencePolicy",
    "FixedDepthPolicy",
    "HaltHeadPolicy",
    "HaltingPolicy",
    "OraclePolicy",
    "PrivilegedPolicy",
    "RLHaltingPolicy",
    "RandomPolicy",
    "calibrate",
    "curve_from_episodes",
    "evaluate",
    "evaluate_by_stepping",
    "evaluate_live",
    "evaluate_policies",
    "halting_curve",
    "halting_steps",
    "make_policy",
    "summarize",
    "train_rl_policy",
]
