"""Checkpoints that resume a run exactly: random generators, gymnasium envs, atomic files.

A training run that is stopped (a killed process, a machine that goes away) and resumed from its
last checkpoint should end exactly where an uninterrupted run ends. That needs more than the
networks and the optimizer: the global random generators (:func:`rng_state`) and the state of every
environment, mid-episode (:func:`env_state`), including its wrappers' running statistics and the
simulator's physics state. Everything is stored as tensors and plain Python values, so
``torch.load(weights_only=True)`` reads it. :func:`normalization_state` keeps just the running
statistics of the ``NormalizeObservation`` / ``NormalizeReward`` wrappers, what a policy needs
to be evaluated or trained further (``--init-from``, ``--eval-checkpoint``).

Example:
    >>> import gymnasium as gym
    >>> env = gym.wrappers.NormalizeObservation(gym.make("Pendulum-v1"))
    >>> _ = env.reset(seed=0)
    >>> saved = env_state(env)
    >>> first = env.step(env.action_space.sample() * 0)[0]
    >>> load_env_state(env, saved)
    >>> bool((env.step(env.action_space.sample() * 0)[0] == first).all())
    True
"""

from __future__ import annotations

import collections
import os
import random
from typing import Any, cast

import numpy as np
import torch

from .files import atomic_write
from .wrappers import find_in_chain

__all__ = [
    "env_state",
    "find_wrapper",
    "load_env_state",
    "load_normalization_state",
    "load_rng_state",
    "load_run_state",
    "load_running_stats_state",
    "normalization_state",
    "rng_state",
    "run_state",
    "running_stats_state",
    "save_checkpoint",
]

# attributes that are structure, not state: the wrapped env, spaces, cached metadata
_STRUCTURE = {
    "env",
    "_saved_kwargs",
    "_ezpickle_args",
    "_ezpickle_kwargs",
    "spec",
    "_cached_spec",
    "metadata",
    "_metadata",
    "model",
    "data",
    "mujoco_renderer",
    "fullpath",
    "observation_structure",
    "render_mode",
}


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save`` to ``path`` atomically: a crash mid-write never leaves a truncated file.

    The file gets the permissions a plain ``open`` would give it (``0o666`` less the umask).

    Args:
        path: the file to write (its folder is created if missing).
        payload: what to save: tensors and plain Python values, so that
            ``torch.load(path, weights_only=True)`` reads it.
    """
    atomic_write(path, lambda file: torch.save(payload, file))


def find_wrapper(env: Any, cls: type) -> Any:
    """The outermost wrapper of type ``cls`` in ``env``'s chain (``env``, ``env.env``, ...).

    Args:
        env: a gymnasium env, wrapped or not.
        cls: the wrapper class to find (e.g. ``gymnasium.wrappers.NormalizeObservation``).

    Returns:
        That wrapper.

    Raises:
        ValueError: no wrapper of that type; build the env with it.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.wrappers.ClipAction(gym.wrappers.NormalizeObservation(gym.make("Pendulum-v1")))
        >>> type(find_wrapper(env, gym.wrappers.NormalizeObservation)).__name__
        'NormalizeObservation'
    """
    layer = find_in_chain(env, lambda layer: isinstance(layer, cls))
    if layer is not None:
        return layer
    raise ValueError(
        f"no {cls.__name__} wrapper in {env}; build the env with gymnasium.wrappers.{cls.__name__}"
    )


def running_stats_state(rms: Any) -> dict[str, Any]:
    """A copy of running mean/variance statistics (gymnasium's ``RunningMeanStd``) as tensors.

    Args:
        rms: an object with ``mean``, ``var`` and ``count`` (e.g. a ``NormalizeObservation``
            wrapper's ``obs_rms``).

    Returns:
        ``{"mean": float64 tensor, "var": float64 tensor, "count": float}``.

    Example:
        >>> from types import SimpleNamespace
        >>> running_stats_state(SimpleNamespace(mean=np.zeros(2), var=np.ones(2), count=3))["count"]
        3.0
    """
    return {
        "mean": torch.as_tensor(np.asarray(rms.mean, dtype=np.float64)).clone(),
        "var": torch.as_tensor(np.asarray(rms.var, dtype=np.float64)).clone(),
        "count": float(rms.count),
    }


def load_running_stats_state(rms: Any, state: dict[str, Any]) -> None:
    """Set ``rms.mean``, ``rms.var`` and ``rms.count`` from :func:`running_stats_state`'s dict.

    Args:
        rms: the statistics to overwrite (e.g. a ``NormalizeObservation`` wrapper's ``obs_rms``).
        state: what :func:`running_stats_state` returned.

    Example:
        >>> from types import SimpleNamespace
        >>> rms = SimpleNamespace(mean=np.zeros(2), var=np.ones(2), count=1.0)
        >>> load_running_stats_state(rms, {"mean": torch.ones(2), "var": torch.ones(2), "count": 5.0})
        >>> rms.mean.tolist(), rms.count
        ([1.0, 1.0], 5.0)
    """
    rms.mean = state["mean"].numpy().astype(np.float64).copy()
    rms.var = state["var"].numpy().astype(np.float64).copy()
    rms.count = float(state["count"])


def _sub_envs(envs: Any) -> list[Any]:
    return list(envs.envs) if hasattr(envs, "envs") else [envs]


def normalization_state(envs: Any) -> dict[str, list[dict[str, Any] | None]]:
    """The observation and reward normalisation statistics of every env of a vector env.

    Args:
        envs: a ``gymnasium.vector.SyncVectorEnv`` (or a single env) whose envs carry
            ``NormalizeObservation`` and ``NormalizeReward`` wrappers.

    Returns:
        ``{"obs_rms": [...], "return_rms": [...]}``, one :func:`running_stats_state` per env
        (``None`` for an env without that wrapper, e.g. CleanRL's discrete PPO and SAC normalise
        nothing): merge it into a checkpoint dict, and pass that dict to
        :func:`load_normalization_state`.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.wrappers.NormalizeReward(gym.wrappers.NormalizeObservation(gym.make("Pendulum-v1")))
        >>> _ = env.reset(seed=0)
        >>> saved = normalization_state(env)
        >>> saved["obs_rms"][0]["mean"].shape, len(saved["return_rms"])
        (torch.Size([3]), 1)
    """
    import gymnasium as gym

    def stats(env: Any, cls: type, attribute: str) -> dict[str, Any] | None:
        layer = find_in_chain(env, lambda layer: isinstance(layer, cls))
        return None if layer is None else running_stats_state(getattr(layer, attribute))

    sub_envs = _sub_envs(envs)
    return {
        "obs_rms": [stats(e, gym.wrappers.NormalizeObservation, "obs_rms") for e in sub_envs],
        "return_rms": [stats(e, gym.wrappers.NormalizeReward, "return_rms") for e in sub_envs],
    }


def load_normalization_state(envs: Any, state: dict[str, Any]) -> None:
    """Load :func:`normalization_state`'s statistics into the wrappers of every env of ``envs``.

    Args:
        envs: a vector env (or a single env) built with the same normalisation wrappers.
        state: a dict with the keys ``"obs_rms"`` and ``"return_rms"`` (a whole checkpoint will
            do). Envs past the saved ones get the last saved env's statistics; a ``None`` entry
            (an env saved without that wrapper) loads nothing.

    Example:
        >>> import gymnasium as gym
        >>> def make():
        ...     env = gym.wrappers.NormalizeObservation(gym.make("Pendulum-v1"))
        ...     return gym.wrappers.NormalizeReward(env)
        >>> trained, fresh = make(), make()
        >>> _ = trained.reset(seed=0)
        >>> load_normalization_state(fresh, normalization_state(trained))
        >>> bool((fresh.env.obs_rms.mean == trained.env.obs_rms.mean).all())
        True
    """
    import gymnasium as gym

    obs_states, return_states = state["obs_rms"], state["return_rms"]
    for i, env in enumerate(_sub_envs(envs)):
        j = min(i, len(obs_states) - 1)
        if obs_states[j] is not None:
            load_running_stats_state(
                find_wrapper(env, gym.wrappers.NormalizeObservation).obs_rms, obs_states[j]
            )
        if return_states[j] is not None:
            load_running_stats_state(
                find_wrapper(env, gym.wrappers.NormalizeReward).return_rms, return_states[j]
            )


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's global (CPU and CUDA) random generators."""
    name, keys, position, has_gauss, cached = cast(tuple, np.random.get_state())
    version, internal, gauss_next = random.getstate()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def load_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`.

    Args:
        state: what :func:`rng_state` returned (Python's, NumPy's, torch's and CUDA's generators;
            CUDA's only where CUDA is available).
    """
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def env_state(env: Any) -> list[dict[str, Any]]:
    """The state of a gymnasium env and each of its wrappers, outermost first.

    Holds every attribute that is plain data (numbers, arrays, running statistics, queues, random
    generators), and for MuJoCo envs the simulator's full integration state. Functions, spaces and
    the wrapped env are structure, rebuilt by the code that makes the env, and are not saved.

    Args:
        env: a gymnasium env and its wrappers (e.g. one env of a ``SyncVectorEnv``).

    Returns:
        One ``{"type": class name, "attributes": {...}}`` per layer, outermost first.

    Raises:
        TypeError: an attribute holds something that cannot be saved this way; the message names it.
    """
    layers = []
    layer = env
    while layer is not None:
        saved = {}
        for name, value in vars(layer).items():
            if name in _STRUCTURE or callable(value) or _is_space(value):
                continue
            saved[name] = _encode(value, f"{type(layer).__name__}.{name}")
        if hasattr(layer, "data") and hasattr(layer, "model") and _is_mujoco(layer):
            saved["__mujoco__"] = _mujoco_state(layer)
        layers.append({"type": type(layer).__name__, "attributes": saved})
        layer = getattr(layer, "env", None)
    return layers


def check_resumable(envs: Any) -> None:
    """Raise ``TypeError`` (naming the attribute) if an env's state cannot be saved for an exact
    resume: call it before training, so a run with checkpoints fails at start, not at its first
    checkpoint. A Box2D env (``BipedalWalker-v3``, ``LunarLander-v3``) holds its world as a C object.

    Example:
        >>> import gymnasium as gym
        >>> check_resumable(gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")]))
    """
    for env in _sub_envs(envs):
        env_state(env)


def load_env_state(env: Any, state: list[dict[str, Any]]) -> None:
    """Restore :func:`env_state` into an env built the same way (same wrappers, same order).

    Args:
        env: the env to restore into, built by the same code as the saved one.
        state: what :func:`env_state` returned.

    Raises:
        ValueError: the env's wrappers differ from the saved ones; build it with the same wrappers.
    """
    layers = []
    layer = env
    while layer is not None:
        layers.append(layer)
        layer = getattr(layer, "env", None)
    kinds = [type(layer).__name__ for layer in layers]
    saved_kinds = [entry["type"] for entry in state]
    if kinds != saved_kinds:
        raise ValueError(
            f"the env's wrappers {kinds} differ from the saved ones {saved_kinds}; build the env "
            "with the same wrappers as the run that saved it"
        )
    for layer, entry in zip(layers, state, strict=True):
        for name, value in entry["attributes"].items():
            if name == "__mujoco__":
                _load_mujoco_state(layer, value)
            else:
                setattr(layer, name, _decode(value, getattr(layer, name, None)))


def _loop_tensor(value: Any) -> torch.Tensor:
    # a Ctrl-C between ``envs.step`` and the scripts' ``torch.Tensor(...)`` leaves NumPy arrays; convert
    # them as the scripts do (float32), and leave tensors as they are
    if isinstance(value, torch.Tensor):
        return value.cpu()
    return torch.Tensor(value)


def run_state(envs: Any, next_obs: torch.Tensor, next_done: torch.Tensor) -> dict[str, Any]:
    """What resuming a training loop exactly needs beyond the networks, optimizers and counters.

    Args:
        envs: the training vector env (a ``SyncVectorEnv``, or a single env), mid-episode.
        next_obs: the loop's last observation (the next rollout's first).
        next_done: the loop's last done flags.

    Returns:
        ``{"obs_rms", "return_rms", "envs", "rng", "next_obs", "next_done"}``: the normalisation
        statistics (:func:`normalization_state`), every env's :func:`env_state`, the global random
        generators (:func:`rng_state`) and the two tensors on the CPU. Merge it into the checkpoint
        dict; :func:`load_run_state` restores it.

    Example:
        >>> import gymnasium as gym
        >>> def make():
        ...     env = gym.wrappers.NormalizeObservation(gym.make("Pendulum-v1"))
        ...     return gym.wrappers.NormalizeReward(env)
        >>> envs = gym.vector.SyncVectorEnv([make])
        >>> obs, _ = envs.reset(seed=0)
        >>> saved = run_state(envs, torch.as_tensor(obs), torch.zeros(1))
        >>> first = envs.step(np.zeros((1, 1)))[0]
        >>> next_obs, next_done = load_run_state(envs, saved)
        >>> bool((envs.step(np.zeros((1, 1)))[0] == first).all()), next_done.tolist()
        (True, [0.0])
    """
    return {
        **normalization_state(envs),
        "envs": [env_state(env) for env in _sub_envs(envs)],
        "rng": rng_state(),
        "next_obs": _loop_tensor(next_obs),
        "next_done": _loop_tensor(next_done),
    }


def load_run_state(
    envs: Any, state: dict[str, Any], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Restore :func:`run_state` into ``envs`` and the global generators; returns (next_obs, next_done).

    The envs' states include their wrappers' normalisation statistics, so ``"obs_rms"`` and
    ``"return_rms"`` (kept for :func:`load_normalization_state`) are not read again.

    Args:
        envs: a vector env built the same way as the saved one (same number of envs, same wrappers).
        state: :func:`run_state`'s dict (a whole checkpoint will do).
        device: where the returned tensors go (default: the CPU).

    Raises:
        KeyError: ``state`` has no ``"envs"``: a checkpoint of a release before exact resume; restore
            what it has with :func:`load_normalization_state` and start new episodes.
        ValueError: the envs' number or wrappers differ from the saved ones.

    Example: see :func:`run_state`.
    """
    if "envs" not in state:
        raise KeyError(
            "load_run_state: no 'envs' in this checkpoint (written before exact resume); restore it with "
            "load_normalization_state and reset the envs instead"
        )
    sub_envs, saved = _sub_envs(envs), state["envs"]
    if len(sub_envs) != len(saved):
        raise ValueError(f"load_run_state: {len(sub_envs)} envs, but {len(saved)} saved; build as many")
    for env, env_saved in zip(sub_envs, saved, strict=True):
        load_env_state(env, env_saved)
    load_rng_state(state["rng"])
    return state["next_obs"].to(device or "cpu"), state["next_done"].to(device or "cpu")


def _is_space(value: Any) -> bool:
    try:
        from gymnasium import spaces
    except ImportError:  # pragma: no cover - gymnasium is there whenever an env is
        return False
    return isinstance(value, spaces.Space)


def _is_mujoco(layer: Any) -> bool:
    return type(layer.data).__module__.startswith("mujoco")


def _mujoco_state(layer: Any) -> torch.Tensor:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(layer.model, spec), dtype=np.float64)
    mujoco.mj_getState(layer.model, layer.data, state, spec)
    return torch.from_numpy(state)


def _load_mujoco_state(layer: Any, state: torch.Tensor) -> None:
    import mujoco

    mujoco.mj_setState(layer.model, layer.data, state.numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(layer.model, layer.data)  # positions of bodies, sensors: derived from the state


def _encode(value: Any, where: str) -> Any:
    """``value`` as tensors and plain Python values, tagged so that :func:`_decode` can rebuild it."""
    if isinstance(value, np.generic):  # before float: np.float64 is a float too
        return {"__numpy_scalar__": torch.from_numpy(np.asarray(value).reshape(1))}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.array(value, copy=True))}
    if isinstance(value, np.random.Generator):
        return {"__generator__": value.bit_generator.state}
    if isinstance(value, collections.deque):
        return {"__deque__": [_encode(item, where) for item in value], "maxlen": value.maxlen}
    if isinstance(value, list | tuple):
        return {"__sequence__": [_encode(item, where) for item in value], "tuple": isinstance(value, tuple)}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"__dict__": {key: _encode(item, where) for key, item in value.items()}}
    if hasattr(value, "mean") and hasattr(value, "var") and hasattr(value, "count"):
        return {"__running_stats__": {k: _encode(getattr(value, k), where) for k in ("mean", "var", "count")}}
    raise TypeError(
        f"{where} is a {type(value).__name__}, which env_state cannot save; exact resume needs every "
        "attribute of the env and its wrappers to be plain data (numbers, arrays, running statistics)"
    )


def _decode(value: Any, current: Any) -> Any:
    """Rebuild what :func:`_encode` stored; ``current`` is the live attribute, reused where it can be."""
    if not isinstance(value, dict):
        return value
    if "__numpy_scalar__" in value:
        return value["__numpy_scalar__"].numpy()[0]
    if "__numpy__" in value:
        return value["__numpy__"].numpy().copy()
    if "__generator__" in value:
        generator = current if isinstance(current, np.random.Generator) else np.random.default_rng()
        generator.bit_generator.state = value["__generator__"]
        return generator
    if "__deque__" in value:
        return collections.deque([_decode(item, None) for item in value["__deque__"]], maxlen=value["maxlen"])
    if "__sequence__" in value:
        items = [_decode(item, None) for item in value["__sequence__"]]
        return tuple(items) if value["tuple"] else items
    if "__dict__" in value:
        return {key: _decode(item, None) for key, item in value["__dict__"].items()}
    if "__running_stats__" in value:
        for key, item in value["__running_stats__"].items():
            setattr(current, key, _decode(item, None))
        return current
    raise ValueError(f"unknown entry in a saved env state: {sorted(value)}")
