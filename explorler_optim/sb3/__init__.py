"""ExploRLer for Stable-Baselines3 on-policy algorithms: one callback, no optimizer swap.

:class:`ExploRLerCallback` records anchors while SB3 trains (an anchor per PPO epoch, one per
TRPO/A2C iteration), runs the Empty-Space Search between iterations through the scripts'
:class:`~explorler_optim.rl.SearchStep` (its budget rule included), scores the candidates on separate
environments with the training ``VecNormalize`` statistics frozen, and moves the policy to the best
one. ``policy.optimizer`` is not replaced, so ``model.save`` / ``PPO.load`` work unchanged.
:class:`ExploRLerCheckpointCallback` writes the callback's state beside each model checkpoint.

Modules: ``actor`` (the deterministic actor and the searched Parameters), ``checks`` (what is checked
and decided when ``learn()`` starts), ``callback``, ``checkpoints``.

Needs the ``sb3`` extra (stable-baselines3, and sb3-contrib for TRPO): ``pip install -e ".[sb3]"`` in a
clone, ``pip install "explorler-optim[sb3]"`` from a package index. Importing
``explorler_optim`` itself never imports SB3.
"""

from __future__ import annotations

from .actor import SB3Actor, sb3_actor, sb3_actor_params
from .callback import ExploRLerCallback
from .checkpoints import ExploRLerCheckpointCallback, state_path

__all__ = [
    "ExploRLerCallback",
    "ExploRLerCheckpointCallback",
    "SB3Actor",
    "sb3_actor",
    "sb3_actor_params",
    "state_path",
]
