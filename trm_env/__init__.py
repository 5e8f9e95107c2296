"""trm-halting: when should a Tiny Recursive Model stop thinking?

The pipeline: ``loss`` (TRMLoss) -> ``tasks`` (``load_task``: market and synthetic data as a ``Task``) ->
``model`` (TinyRecursiveModel) -> ``training`` (deep supervision) -> ``rollouts`` (``simulate``: the
frozen (samples x steps) table) -> ``env`` (the halting env, a view of the table).
"""

from trm_env.env import register_envs
from trm_env.loss import TRMLoss, class_weights_from_labels, halt_target, profit_weight, profit_weighted_ce
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import Rollouts, simulate
from trm_env.tasks import load_task

register_envs()

__all__ = [
    "Rollouts",
    "TRMLoss",
    "TinyRecursiveModel",
    "class_weights_from_labels",
    "halt_target",
    "load_task",
    "profit_weight",
    "profit_weighted_ce",
    "simulate",
]
