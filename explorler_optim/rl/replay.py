"""``ReplayBuffer``: an off-policy loop's memory of transitions, saved whole by a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

__all__ = ["ReplayBuffer"]

_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones")


class ReplayBuffer:
    """A ring of transitions, sampled uniformly (CleanRL's SAC memory, after Stable-Baselines3's).

    Samples are drawn with NumPy's global generator, which a run's checkpoint saves, and
    :meth:`state_dict` holds the stored transitions: a run resumed from a checkpoint samples exactly
    what the uninterrupted run would have. Once full, the oldest transitions are overwritten.

    Args:
        size: transitions kept.
        obs_shape: one observation's shape.
        act_shape: one action's shape.
        device: where :meth:`sample` puts its tensors.

    Example:
        >>> rb = ReplayBuffer(3, (2,), (1,), "cpu")
        >>> rb.add(np.zeros((2, 2)), np.ones((2, 2)), np.zeros((2, 1)), [1.0, 2.0], [False, True])
        >>> len(rb), rb.sample(4).rewards.shape
        (2, torch.Size([4]))
    """

    def __init__(
        self, size: int, obs_shape: Sequence[int], act_shape: Sequence[int], device: torch.device | str
    ) -> None:
        if size < 1:
            raise ValueError(f"ReplayBuffer: size must be >= 1, got {size}")
        self.size, self.device, self.pos, self.full = int(size), device, 0, False
        shapes = (obs_shape, obs_shape, act_shape, (), ())
        self.stores = {name: np.zeros((size, *shape), np.float32) for name, shape in zip(_FIELDS, shapes)}

    def __len__(self) -> int:
        return self.size if self.full else self.pos

    def add(self, obs: Any, next_obs: Any, actions: Any, rewards: Any, dones: Any) -> None:
        """Store one transition per env (row ``i`` of every argument: env ``i``'s)."""
        for row in zip(obs, next_obs, actions, rewards, dones, strict=True):
            for store, value in zip(self.stores.values(), row, strict=True):
                store[self.pos] = value
            self.pos, self.full = (self.pos + 1) % self.size, self.full or self.pos + 1 == self.size

    def sample(self, batch_size: int) -> SimpleNamespace:
        """``batch_size`` transitions drawn uniformly with replacement: float32 tensors named
        ``observations``, ``next_observations``, ``actions``, ``rewards`` and ``dones``.

        Raises:
            ValueError: the buffer is empty.
        """
        if len(self) == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty; add transitions first")
        index = np.random.randint(0, len(self), size=batch_size)
        return SimpleNamespace(
            **{k: torch.as_tensor(v[index], device=self.device) for k, v in self.stores.items()}
        )

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions (tensors) and the ring's position."""
        return {"pos": self.pos, "full": self.full} | {
            name: torch.from_numpy(store[: len(self)].copy()) for name, store in self.stores.items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s transitions into a buffer of the same size and shapes."""
        rows = state["pos"] if not state["full"] else self.size
        for name, store in self.stores.items():
            if tuple(state[name].shape) != (rows, *store.shape[1:]):
                raise ValueError(
                    f"ReplayBuffer.load_state_dict: saved {name} of shape {tuple(state[name].shape)}, "
                    f"this buffer holds {(rows, *store.shape[1:])}; build it with the saved size and shapes"
                )
        for name, store in self.stores.items():
            store[:rows] = state[name].numpy()
        self.pos, self.full = int(state["pos"]), bool(state["full"])

    def __repr__(self) -> str:
        return f"ReplayBuffer({len(self):,} of {self.size:,} transitions)"
