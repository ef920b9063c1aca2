"""Scoring candidates one by one in place: the shared loop of the scorers that need no episodes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from torch import Tensor

Score = TypeVar("Score")


def check_candidates(params: Sequence[Tensor], candidates: Sequence[Tensor]) -> None:
    """Raise ``ValueError`` unless ``candidates[i]`` is ``(N, *params[i].shape)`` for one ``N``."""
    if len(candidates) != len(params):
        raise ValueError(f"got {len(candidates)} candidate tensors for {len(params)} parameters")
    rows = int(candidates[0].shape[0]) if candidates else 0
    for p, c in zip(params, candidates, strict=True):
        if tuple(c.shape) != (rows, *p.shape):
            raise ValueError(f"a candidate tensor has shape {tuple(c.shape)}, expected {(rows, *p.shape)}")


def score_each(
    params: Sequence[Tensor], candidates: Sequence[Tensor], score_loaded: Callable[[], Score]
) -> list[Score]:
    """Load each row of ``candidates`` into ``params`` in turn and call ``score_loaded()``; the
    parameters are restored afterwards, also when it raises. Call under ``torch.no_grad()``."""
    rows = int(candidates[0].shape[0]) if candidates else 0
    backup = [p.detach().clone() for p in params]
    scores = []
    try:
        for row in range(rows):
            for p, c in zip(params, candidates, strict=True):
                p.copy_(c[row])
            scores.append(score_loaded())
    finally:
        for p, b in zip(params, backup, strict=True):
            p.copy_(b)
    return scores
