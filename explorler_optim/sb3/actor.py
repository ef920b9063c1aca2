"""The deterministic actor of an SB3 ``ActorCriticPolicy``: what ExploRLer scores and searches.

:func:`sb3_actor` is the actor as an ``nn.Module`` sharing the policy's Parameters (a plain
``nn.Sequential`` where that is exact, the evaluator's fast path); :func:`sb3_actor_params` lists the
Parameters a search moves (the actor's and ``log_std``, never the critic's).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

try:
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.preprocessing import preprocess_obs
    from stable_baselines3.common.torch_layers import FlattenExtractor
except ImportError as error:  # pragma: no cover - exercised only without SB3
    from explorler_optim.extras import install_hint

    raise ImportError(
        f"explorler_optim.sb3 needs stable-baselines3: {install_hint('sb3')} "
        "(or `pip install stable-baselines3 sb3-contrib`)"
    ) from error

__all__ = ["SB3Actor", "check_policy", "sb3_actor", "sb3_actor_params"]


def check_policy(policy: Any) -> ActorCriticPolicy:
    """``policy`` if ExploRLer can score and search it, else an error that says why.

    Args:
        policy: ``model.policy`` of an SB3 algorithm.

    Returns:
        The same policy, typed as an ``ActorCriticPolicy``.

    Raises:
        TypeError: not an ``ActorCriticPolicy`` (off-policy algorithms, ``MaskablePPO``'s policy), a
            recurrent one, or an action space other than Box and Discrete.

    Example:
        >>> from stable_baselines3 import A2C
        >>> check_policy(A2C("MlpPolicy", "CartPole-v1", device="cpu").policy).__class__.__name__
        'ActorCriticPolicy'
    """
    if not isinstance(policy, ActorCriticPolicy):
        raise TypeError(
            f"expected an SB3 ActorCriticPolicy (model.policy of PPO, A2C or sb3-contrib TRPO), got "
            f"{type(policy).__name__}"
        )
    if hasattr(policy, "lstm_actor"):
        raise TypeError(
            f"{type(policy).__name__} is recurrent; candidates are scored by a stateless actor, "
            "so recurrent policies are not supported"
        )
    from gymnasium import spaces

    if not isinstance(policy.action_space, (spaces.Box, spaces.Discrete)):
        raise TypeError(
            f"action space {policy.action_space} is not supported; ExploRLer's evaluator scores "
            "Box and Discrete actions"
        )
    return policy


class SB3Actor(nn.Module):
    """The deterministic actor of an SB3 ``ActorCriticPolicy``, sharing its Parameters.

    ``obs -> preprocess -> pi_features_extractor -> mlp_extractor.policy_net -> action_net`` and, for a
    squashed (gSDE) policy, ``tanh`` then rescaling to the action bounds: what
    ``policy.predict(obs, deterministic=True)`` computes before it clips Box actions to the action
    space (``PolicyEvaluator`` clips the same way; Discrete logits are argmax-ed there).

    Use :func:`sb3_actor`, which returns a plain ``nn.Sequential`` (the evaluator's fast path) where
    that is exact.

    Args:
        policy: ``model.policy`` of PPO, A2C or sb3-contrib TRPO.

    Raises:
        TypeError: ``policy`` is not supported (see ``check_policy``).

    Example:
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu")
        >>> SB3Actor(model.policy)(torch.zeros(2, 3)).shape
        torch.Size([2, 1])
    """

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        check_policy(policy)
        self.features_extractor = policy.pi_features_extractor
        self.policy_net = policy.mlp_extractor.policy_net
        self.action_net = policy.action_net
        self._observation_space = policy.observation_space
        self._normalize_images = policy.normalize_images
        self.squash = bool(policy.squash_output)
        if self.squash:
            box = cast(Any, policy.action_space)  # squash_output implies a Box action space
            self._low = torch.as_tensor(box.low, dtype=torch.float32)
            self._high = torch.as_tensor(box.high, dtype=torch.float32)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action for ``obs`` (squashed into the action space when SB3 squashes)."""
        x = preprocess_obs(obs, self._observation_space, normalize_images=self._normalize_images)
        mean = self.action_net(self.policy_net(self.features_extractor(x)))
        if not self.squash:
            return mean
        low, high = self._low.to(mean.device), self._high.to(mean.device)
        return low + 0.5 * (torch.tanh(mean) + 1.0) * (high - low)


def sb3_actor(policy: ActorCriticPolicy) -> nn.Module:
    """The deterministic actor of an SB3 ``ActorCriticPolicy`` as an ``nn.Module`` sharing its Parameters.

    For a flat Box observation space with SB3's default ``FlattenExtractor`` and no squashing (the
    ``MlpPolicy`` default) this is ``nn.Sequential(*policy_net, action_net)``, which
    :class:`~explorler_optim.rl.PolicyEvaluator` runs with batched matrix products; otherwise an
    :class:`SB3Actor`. Its output is the action mean (or Discrete logits); clipped to the Box bounds it
    equals ``policy.predict(obs, deterministic=True)``.

    Args:
        policy: ``model.policy`` of PPO, A2C or sb3-contrib TRPO.

    Returns:
        The actor module (its Parameters are the policy's own).

    Raises:
        TypeError: ``policy`` is not supported (see ``check_policy``).

    Example:
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu")
        >>> actor = sb3_actor(model.policy)
        >>> actor(torch.zeros(1, 3)).shape
        torch.Size([1, 1])
    """
    check_policy(policy)
    from gymnasium import spaces

    space = policy.observation_space
    flat = (
        type(policy.pi_features_extractor) is FlattenExtractor
        and isinstance(space, spaces.Box)
        and len(space.shape) == 1
        and not policy.squash_output
    )
    if flat:
        return nn.Sequential(*policy.mlp_extractor.policy_net, policy.action_net)
    return SB3Actor(policy)


def sb3_actor_params(policy: ActorCriticPolicy) -> list[nn.Parameter]:
    """The Parameters ExploRLer searches in an SB3 policy: the actor's and ``log_std``, never the critic's.

    That is the policy's own features extractor (when not shared with the critic), the policy branch
    of ``mlp_extractor``, ``action_net`` and ``log_std`` (Gaussian and gSDE policies). A features
    extractor shared with the critic is left out (moving it would move the value function too); the
    actor still uses it at its current value.

    Args:
        policy: ``model.policy`` of PPO, A2C or sb3-contrib TRPO.

    Returns:
        The searched Parameters, in a fixed order (the order of the callback's saved anchors).

    Raises:
        TypeError: ``policy`` is not supported (see ``check_policy``).

    Example:
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu")
        >>> [tuple(p.shape) for p in sb3_actor_params(model.policy)][-2:]
        [(1,), (1,)]
    """
    check_policy(policy)
    params: list[nn.Parameter] = []
    if not getattr(policy, "share_features_extractor", True):
        params += list(policy.pi_features_extractor.parameters())
    params += list(policy.mlp_extractor.policy_net.parameters())
    params += list(policy.action_net.parameters())
    log_std = getattr(policy, "log_std", None)
    if isinstance(log_std, nn.Parameter):
        params.append(log_std)
    return params
