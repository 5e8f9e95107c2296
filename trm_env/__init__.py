"""trm-halting: when should a Tiny Recursive Model stop thinking?

The pipeline in five modules: ``loss`` (TRMLoss) -> ``tasks`` (market and synthetic data) ->
``model`` (TinyRecursiveModel) -> ``training`` (deep supervision) -> ``env`` (the halting env).
"""

from trm_env.env import register_envs
from trm_env.loss import TRMLoss, class_weights_from_labels, halt_target, profit_weight, profit_weighted_ce
from trm_env.model import TinyRecursiveModel

register_envs()

__all__ = [
    "TRMLoss",
    "TinyRecursiveModel",
    "class_weights_from_labels",
    "halt_target",
    "profit_weight",
    "profit_weighted_ce",
]
