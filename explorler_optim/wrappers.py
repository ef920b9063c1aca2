"""The wrapper chain of an environment: gymnasium's ``.env`` links and SB3's ``.venv`` links.

The lowest layer of the package beside :mod:`.files`: both the checkpoints (:mod:`.checkpoint`) and
the frozen statistics (:mod:`.rl.normalize`) look down a wrapper chain, so the walk lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["find_in_chain"]


def find_in_chain(env: Any, matches: Callable[[Any], bool]) -> Any:
    """The first object down the wrapper chain (gymnasium ``.env``, SB3 ``.venv``) that ``matches``.

    Args:
        env: the outermost wrapper (or env).
        matches: the test of a layer.

    Returns:
        That layer, or ``None`` (also after 100 layers).

    Example:
        >>> import gymnasium as gym
        >>> env = gym.wrappers.ClipAction(gym.make("Pendulum-v1"))
        >>> layer = find_in_chain(env, lambda layer: hasattr(layer, "_max_episode_steps"))
        >>> isinstance(layer, gym.wrappers.TimeLimit)
        True
    """
    seen = 0
    e = env
    while e is not None and seen < 100:
        if matches(e):
            return e
        inner = getattr(e, "env", None)
        e = inner if inner is not None else getattr(e, "venv", None)
        seen += 1
    return None
