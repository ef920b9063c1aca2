"""The callback's state beside the model: its file, its pairing with a model, and
``ExploRLerCheckpointCallback``, which writes one beside every model checkpoint.

A state belongs to one model at one step: :func:`check_pairing` refuses a state saved for other
actor shapes or at another ``num_timesteps``; :func:`state_path` names the state file of a model
file; :func:`save_state` / :func:`read_state` write and read it.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, cast, runtime_checkable

import torch
from stable_baselines3.common.callbacks import CheckpointCallback

from ..checkpoint import save_checkpoint
from .actor import check_policy, sb3_actor_params

__all__ = [
    "STATE_VERSION",
    "ExploRLerCheckpointCallback",
    "check_pairing",
    "check_state",
    "read_state",
    "save_state",
    "state_path",
]

STATE_VERSION = 2  # 1: no num_timesteps / param_shapes / search_step (still read, unchecked)


def check_state(state: dict[str, Any]) -> None:
    """Raise unless ``state`` is an ``ExploRLerCallback`` state dict (of a version this one reads)."""
    if state.get("version") not in (1, STATE_VERSION) or "explorer" not in state:
        raise ValueError(
            "not an ExploRLerCallback state dict (expected 'version' and 'explorer' keys); pass what "
            "ExploRLerCallback.state_dict() returned or load the file with ExploRLerCallback.load()"
        )


def check_pairing(state: dict[str, Any], model: Any, check_step: bool) -> None:
    """Raise unless ``state`` was saved for ``model``'s actor (and, if ``check_step``, at its step).

    Args:
        state: an ``ExploRLerCallback`` state dict.
        model: the SB3 model it is to be applied to.
        check_step: also require the state's ``num_timesteps`` to be the model's (a state travelling
            inside the model's own file is paired by construction and skips this).

    Raises:
        ValueError: another model's state, or one saved at another step (the message says which
            file fits).
    """
    shapes = [tuple(s) for s in state["explorer"]["shapes"]]
    ours = [tuple(p.shape) for p in sb3_actor_params(check_policy(model.policy))]
    if shapes != ours:
        raise ValueError(
            f"ExploRLerCallback: this state was saved for actor parameters of shapes {shapes}, but "
            f"the model's are {ours}: it belongs to another model; load the state saved with this one"
        )
    saved = state.get("num_timesteps")
    if check_step and saved is not None and saved != model.num_timesteps:
        raise ValueError(
            f"ExploRLerCallback: this state was saved at num_timesteps={saved:,} but the model is at "
            f"{model.num_timesteps:,}: load the state saved with this model (ExploRLerCheckpointCallback "
            "names it <prefix>_<steps>_steps.explorler.pt) and continue with "
            "learn(..., reset_num_timesteps=False)"
        )


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a callback state to ``path`` atomically (``checkpoint.save_checkpoint``)."""
    save_checkpoint(path, state)


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state file written by :func:`save_state` (``weights_only=True``, onto the CPU)."""
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)


@runtime_checkable
class _SavesState(Protocol):
    """What the checkpoint callback needs of the ``ExploRLerCallback`` beside it (its ``model``
    once attached, read at the first save)."""

    def save(self, path: str | os.PathLike) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...


def state_path(model_path: str | os.PathLike) -> str:
    """The ExploRLer state file of a model file: ``x_1000_steps.zip`` -> ``x_1000_steps.explorler.pt``.

    Args:
        model_path: a model file (``.zip`` or no extension, as ``model.save`` takes it).

    Returns:
        The state file's path.

    Example:
        >>> state_path("logs/rl_model_4096_steps.zip")
        'logs/rl_model_4096_steps.explorler.pt'
    """
    path = os.fspath(model_path)
    return (path[: -len(".zip")] if path.endswith(".zip") else path) + ".explorler.pt"


class ExploRLerCheckpointCallback(CheckpointCallback):
    """SB3's ``CheckpointCallback`` that also writes the ExploRLer state, with the same step in its name.

    Every ``save_freq`` calls it saves ``<save_path>/<name_prefix>_<steps>_steps.zip`` (and, if asked,
    the replay buffer and ``VecNormalize``) as SB3's does, then ``...._<steps>_steps.explorler.pt``
    (:func:`state_path`), written atomically. Pass both callbacks to ``learn()``.

    Args:
        explorler: the ``ExploRLerCallback`` of the same ``learn()``.
        save_freq: as ``CheckpointCallback``'s: save every this many calls.
        save_path: as ``CheckpointCallback``'s: the folder of the checkpoints.
        name_prefix: as ``CheckpointCallback``'s: the files' prefix.
        save_replay_buffer: as ``CheckpointCallback``'s.
        save_vecnormalize: as ``CheckpointCallback``'s.
        verbose: as ``CheckpointCallback``'s.

    Raises:
        TypeError: ``explorler`` is not an ``ExploRLerCallback``.

    Example:
        >>> from stable_baselines3 import PPO
        >>> from explorler_optim.sb3 import ExploRLerCallback
        >>> model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, n_epochs=1, device="cpu")
        >>> explorler = ExploRLerCallback(explore_every=100)
        >>> checkpoints = ExploRLerCheckpointCallback(explorler, save_freq=64, save_path="ckpt")
        >>> _ = model.learn(128, callback=[explorler, checkpoints])
        >>> for name in sorted(os.listdir("ckpt")):
        ...     print(name)
        rl_model_128_steps.explorler.pt
        rl_model_128_steps.zip
        rl_model_64_steps.explorler.pt
        rl_model_64_steps.zip
        >>> resumed = PPO.load("ckpt/rl_model_128_steps.zip", device="cpu")
        >>> again = ExploRLerCallback(explore_every=100)
        >>> again.load(state_path("ckpt/rl_model_128_steps.zip"), model=resumed)
        >>> again.iterations, again.explorer.num_anchors
        (1, 1)
    """

    def __init__(
        self,
        explorler: _SavesState,
        save_freq: int,
        save_path: str,
        name_prefix: str = "rl_model",
        save_replay_buffer: bool = False,
        save_vecnormalize: bool = False,
        verbose: int = 0,
    ) -> None:
        if not isinstance(explorler, _SavesState):
            raise TypeError(
                f"ExploRLerCheckpointCallback: explorler must be the ExploRLerCallback passed to the same "
                f"learn(), got {type(explorler).__name__}"
            )
        super().__init__(save_freq, save_path, name_prefix, save_replay_buffer, save_vecnormalize, verbose)
        self.explorler = explorler

    def _on_step(self) -> bool:
        result = super()._on_step()
        if self.n_calls % self.save_freq == 0:
            if cast(Any, self.explorler).model is not self.model:  # attached by the same learn()
                raise ValueError(
                    "ExploRLerCheckpointCallback: its ExploRLerCallback is not attached to this model; "
                    "pass both to the same learn(): callback=[explorler, checkpoints]"
                )
            path = self._checkpoint_path(extension="explorler.pt")
            self.explorler.save(path)
            if self.verbose >= 2:
                print(f"Saving ExploRLer state to {path}")
        return bool(result)
