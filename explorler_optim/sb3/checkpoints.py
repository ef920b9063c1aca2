"""Model checkpoints with the ExploRLer state beside each: ``ExploRLerCheckpointCallback``."""

from __future__ import annotations

import os

from stable_baselines3.common.callbacks import CheckpointCallback

from .callback import ExploRLerCallback

__all__ = ["ExploRLerCheckpointCallback", "state_path"]


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
        explorler: ExploRLerCallback,
        save_freq: int,
        save_path: str,
        name_prefix: str = "rl_model",
        save_replay_buffer: bool = False,
        save_vecnormalize: bool = False,
        verbose: int = 0,
    ) -> None:
        if not isinstance(explorler, ExploRLerCallback):
            raise TypeError(
                f"ExploRLerCheckpointCallback: explorler must be the ExploRLerCallback passed to the same "
                f"learn(), got {type(explorler).__name__}"
            )
        super().__init__(save_freq, save_path, name_prefix, save_replay_buffer, save_vecnormalize, verbose)
        self.explorler = explorler

    def _on_step(self) -> bool:
        result = super()._on_step()
        if self.n_calls % self.save_freq == 0:
            if self.explorler.model is not self.model:
                raise ValueError(
                    "ExploRLerCheckpointCallback: its ExploRLerCallback is not attached to this model; "
                    "pass both to the same learn(): callback=[explorler, checkpoints]"
                )
            path = self._checkpoint_path(extension="explorler.pt")
            self.explorler.save(path)
            if self.verbose >= 2:
                print(f"Saving ExploRLer state to {path}")
        return bool(result)
