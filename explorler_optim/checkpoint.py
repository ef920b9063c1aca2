"""Checkpoints that resume a run exactly: random generators, gymnasium envs, atomic files.

A training run that is stopped (a killed process, a machine that goes away) and resumed from its
last checkpoint should end exactly where an uninterrupted run ends. That needs more than the
networks and the optimizer: the global random generators (:func:`rng_state`) and the state of every
environment, mid-episode (:func:`env_state`), including its wrappers' running statistics and the
simulator's physics state. Everything is stored as tensors and plain Python values, so
``torch.load(weights_only=True)`` reads it.

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
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

__all__ = ["env_state", "load_env_state", "load_rng_state", "rng_state", "save_checkpoint"]

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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """Restore the generators saved by :func:`rng_state`."""
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


def load_env_state(env: Any, state: list[dict[str, Any]]) -> None:
    """Restore :func:`env_state` into an env built the same way (same wrappers, same order)."""
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
