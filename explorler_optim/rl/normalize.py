"""Frozen observation and reward normalisation, copied from a training env's running statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from explorler_optim.wrappers import find_in_chain

__all__ = ["ObsNormalizer", "RewardNormalizer", "find_in_chain"]


class _FromWrapper:
    """Default of ``ObsNormalizer.from_env(clip=...)``: take the wrapper's clip, else 10.0."""

    def __repr__(self) -> str:
        return "<the wrapper's clip_obs, else 10.0>"


_FROM_WRAPPER = _FromWrapper()


class ObsNormalizer:
    """Frozen observation normalisation: ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)``.

    The statistics are copied at construction and never updated by evaluation; refresh them by
    building a new normaliser (``ObsNormalizer.from_env(env)``) and assigning it to
    ``PolicyEvaluator.obs_normalizer``.

    Args:
        mean: the running mean of the observations (array-like, the observation's shape).
        var: their running variance, the same shape.
        clip: the bound the normalised observation is clipped to; ``None``: no clipping.
        epsilon: added to the variance before the square root.

    Raises:
        ValueError: ``mean`` and ``var`` differ in shape.

    Example:
    >>> norm = ObsNormalizer(mean=[1.0, 0.0], var=[4.0, 1.0], clip=5.0, epsilon=0.0)
    >>> norm([[3.0, 10.0]]).tolist()
    [[1.0, 5.0]]
    """

    def __init__(self, mean: Any, var: Any, clip: float | None = 10.0, epsilon: float = 1e-8):
        # keep the statistics' dtype (float32 for float32 observation spaces): the arithmetic
        # then matches gymnasium's NormalizeObservation bit for bit
        self.mean = _float_array(mean)
        self.var = _float_array(var)
        if self.mean.shape != self.var.shape:
            raise ValueError(f"ObsNormalizer: mean shape {self.mean.shape} != var shape {self.var.shape}")
        self.clip = None if clip is None else float(clip)
        self.epsilon = float(epsilon)
        self._std = np.sqrt(self.var + self.epsilon)

    @classmethod
    def from_env(
        cls, env: Any, clip: float | None | _FromWrapper = _FROM_WRAPPER, epsilon: float | None = None
    ) -> ObsNormalizer:
        """Copy the statistics of the first observation-normalising wrapper found in ``env``.

        ``env`` may be a wrapped gymnasium env (e.g. ``envs.envs[0]`` of a SyncVectorEnv), a vector
        env wrapped by ``gymnasium.wrappers.vector.NormalizeObservation``, or a Stable-Baselines3
        ``VecNormalize`` (also when other ``VecEnvWrapper`` s wrap it).

        Args:
            env: the training env whose statistics are copied (frozen).
            clip: the clip bound. Not given: the wrapper's own (``VecNormalize.clip_obs``), or
                10.0 for a wrapper without one (gymnasium's ``NormalizeObservation`` does not clip;
                the single-file scripts clip at 10 with a separate wrapper). ``None``: no clipping.
            epsilon: the wrapper's own epsilon unless given.
        """
        wrapper = _find_normalize_wrapper(env)
        if wrapper is None:
            raise ValueError(
                "ObsNormalizer.from_env: no NormalizeObservation / VecNormalize wrapper (an object "
                "with `obs_rms`) found in the wrapper chain of the env; pass the training env "
                "(e.g. envs.envs[0]) or build ObsNormalizer(mean, var) directly"
            )
        if not hasattr(wrapper.obs_rms, "mean"):
            raise ValueError(
                "ObsNormalizer.from_env: the wrapper normalises a Dict observation space "
                "(one statistic per key); only Box observations are supported"
            )
        if isinstance(clip, _FromWrapper):
            wrapper_clip = getattr(wrapper, "clip_obs", None)
            clip = 10.0 if wrapper_clip is None else float(wrapper_clip)
        eps = float(getattr(wrapper, "epsilon", 1e-8)) if epsilon is None else float(epsilon)
        return cls(wrapper.obs_rms.mean, wrapper.obs_rms.var, clip=clip, epsilon=eps)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Normalise a (batch of) raw observation(s); returns float32."""
        x = np.float32((np.asarray(obs) - self.mean) / self._std)
        if self.clip is not None:
            x = np.clip(x, -self.clip, self.clip)
        return np.asarray(x, dtype=np.float32)

    def state_dict(self) -> dict[str, Any]:
        """The statistics and settings (``mean``, ``var``, ``clip``, ``epsilon``), as copies."""
        return {
            "mean": self.mean.copy(),
            "var": self.var.copy(),
            "clip": self.clip,
            "epsilon": self.epsilon,
        }

    @classmethod
    def from_state_dict(cls, sd: dict[str, Any]) -> ObsNormalizer:
        """A normaliser from what :meth:`state_dict` returned.

        Args:
            sd: a dict with ``mean``, ``var``, ``clip`` and ``epsilon``.
        """
        return cls(sd["mean"], sd["var"], clip=sd["clip"], epsilon=sd["epsilon"])

    def __repr__(self) -> str:
        return f"ObsNormalizer(shape={self.mean.shape}, clip={self.clip}, epsilon={self.epsilon})"


class RewardNormalizer:
    """Frozen reward scaling: ``clip(reward / sqrt(var + epsilon), -clip, clip)``.

    The scaling of gymnasium's ``NormalizeReward`` (and SB3's ``VecNormalize``), with the variance
    of the discounted return copied once and never updated: rewards collected outside the training
    env (e.g. candidate episodes reused for training) are scaled exactly as the training env scales
    its own at that moment.

    Args:
        var: the running variance of the discounted return.
        clip: the bound the scaled reward is clipped to; ``None``: no clipping.
        epsilon: added to the variance before the square root.

    Example:
    >>> scale = RewardNormalizer(var=3.0, clip=1.0, epsilon=1.0)
    >>> scale([1.0, 4.0]).tolist()
    [0.5, 1.0]
    """

    def __init__(self, var: float, clip: float | None = 10.0, epsilon: float = 1e-8):
        self.var = float(var)
        self.clip = None if clip is None else float(clip)
        self.epsilon = float(epsilon)

    @classmethod
    def from_env(
        cls, env: Any, clip: float | None | _FromWrapper = _FROM_WRAPPER, epsilon: float | None = None
    ) -> RewardNormalizer:
        """Copy the return variance of the first reward-normalising wrapper found in ``env``.

        Args:
            env: the training env (a wrapped gymnasium env such as ``envs.envs[0]``, or an SB3
                ``VecNormalize``, also under other ``VecEnvWrapper`` s).
            clip: the clip bound. Not given: the wrapper's own (``VecNormalize.clip_reward``), or
                10.0 for gymnasium's ``NormalizeReward`` (it does not clip; the single-file scripts
                clip at 10 with a separate wrapper). ``None``: no clipping.
            epsilon: the wrapper's own epsilon unless given.
        """
        wrapper = find_in_chain(env, _normalizes_rewards)
        if wrapper is None:
            raise ValueError(
                "RewardNormalizer.from_env: no NormalizeReward / VecNormalize wrapper (an object with "
                "`return_rms` or `ret_rms`) found in the wrapper chain of the env; pass the training env "
                "(e.g. envs.envs[0]) or build RewardNormalizer(var) directly"
            )
        rms = getattr(wrapper, "return_rms", None) or wrapper.ret_rms
        if isinstance(clip, _FromWrapper):
            wrapper_clip = getattr(wrapper, "clip_reward", None)
            clip = 10.0 if wrapper_clip is None else float(wrapper_clip)
        eps = float(getattr(wrapper, "epsilon", 1e-8)) if epsilon is None else float(epsilon)
        return cls(float(np.asarray(rms.var)), clip=clip, epsilon=eps)

    def __call__(self, rewards: Any) -> np.ndarray:
        """Scale raw rewards; returns float64 (cast as the training code casts its own)."""
        x = np.asarray(rewards, dtype=np.float64) / np.sqrt(self.var + self.epsilon)
        return x if self.clip is None else np.clip(x, -self.clip, self.clip)

    def __repr__(self) -> str:
        return f"RewardNormalizer(var={self.var:.4g}, clip={self.clip}, epsilon={self.epsilon})"


def _normalizes_rewards(e: Any) -> bool:
    rms = getattr(e, "return_rms", None) or getattr(e, "ret_rms", None)
    return rms is not None and hasattr(rms, "var") and getattr(e, "norm_reward", True)


def _float_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.array(x, copy=True)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x


def _find_normalize_wrapper(env: Any) -> Any:
    """The first wrapper with ``obs_rms`` down the chain (gymnasium ``.env``, SB3 ``.venv``)."""
    return find_in_chain(env, _normalizes_observations)


def _normalizes_observations(e: Any) -> bool:
    rms = getattr(e, "obs_rms", None)
    if rms is None or not (hasattr(rms, "mean") and hasattr(rms, "var") or isinstance(rms, dict)):
        return False
    return getattr(e, "norm_obs", True)  # SB3 VecNormalize(norm_obs=False) keeps unused stats
