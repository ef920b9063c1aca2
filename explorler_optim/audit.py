"""``SelectionAudit``: does a search's selection pick the candidate that is truly best?

ExploRLer picks the candidate with the best score over a few noisy episodes. Whether that pays off
depends on two things a training curve cannot separate: how much better the best candidate truly
is than the incumbent (the *oracle gain*), and how often a few episodes find it (the rank
correlation between selection scores and true returns). :class:`SelectionAudit` measures both in a
real run: it wraps the evaluator that makes the selection, passes its scores through unchanged
(the run's trajectory does not change), and scores the same candidates again with other evaluators,
e.g. many episodes on held-out start states (the "true" return) and the paper's 3 episodes on
fixed start states. The audit's env steps are never part of the run's budget.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .explorer import BatchEvaluator, ExploreResult

__all__ = ["SelectionAudit"]


class SelectionAudit:
    """An ``evaluate_many`` evaluator that selects with one evaluator and audits with others.

    Args:
        selector: the evaluator whose scores :meth:`Explorer.explore` uses (unchanged).
        audits: named evaluators that score the same candidates again, e.g.
            ``{"truth": PolicyEvaluator(..., episodes=20, seed=held_out_seed)}``. Each needs an
            ``evaluate_many``; its ``last_env_steps`` and ``last_returns`` are recorded if it has them.

    After each search, call :meth:`add_result` with the ``ExploreResult`` (which candidate won, whether
    it was committed); ``records`` then holds one dict per search: the scores of every row (row 0
    the incumbent when the search included it) for the selector and each audit, and the outcome.
    :meth:`write_jsonl` appends the records to a file, one JSON object per line.

    Example:
        >>> class Fixed:  # stands in for PolicyEvaluator
        ...     def __init__(self, scores): self.scores = scores
        ...     def evaluate_many(self, params, candidates): return torch.tensor(self.scores)
        >>> audit = SelectionAudit(Fixed([1.0, 3.0, 2.0]), {"truth": Fixed([1.5, 1.0, 2.5])})
        >>> audit.evaluate_many([], [])
        tensor([1., 3., 2.])
        >>> audit.records[-1]["truth"]
        [1.5, 1.0, 2.5]
    """

    def __init__(self, selector: BatchEvaluator, audits: Mapping[str, BatchEvaluator]) -> None:
        for name, evaluator in {"selector": selector, **audits}.items():
            if not hasattr(evaluator, "evaluate_many"):
                raise TypeError(
                    f"{name} must have evaluate_many(params, candidates) (e.g. a PolicyEvaluator), "
                    f"got {type(evaluator).__name__}"
                )
        if "selection" in audits:
            raise ValueError("'selection' names the selector's own scores; give the audit another name")
        self.selector = selector
        self.audits = dict(audits)
        self.records: list[dict[str, Any]] = []

    def evaluate_many(self, params: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor]) -> Any:
        """Score with the selector, then with every audit; return the selector's scores."""
        scores = self.selector.evaluate_many(params, candidates)
        record: dict[str, Any] = {"selection": _as_list(scores)}
        record.update(_extras("selection", self.selector))
        for name, evaluator in self.audits.items():
            record[name] = _as_list(evaluator.evaluate_many(params, candidates))
            record.update(_extras(name, evaluator))
        self.records.append(record)
        return scores

    @property
    def last_success_rates(self) -> Any:
        """The selector's success rates of its last call (what success-first selection reads)."""
        return getattr(self.selector, "last_success_rates", None)

    def add_result(self, result: ExploreResult, **fields: Any) -> dict[str, Any]:
        """Attach a search's outcome (and any ``fields``, e.g. the training step) to its record."""
        if not self.records:
            raise RuntimeError("no search was scored yet; pass this audit to explore() first")
        if len(result.round_sizes) > 1:
            raise ValueError(
                f"the search scored {len(result.round_sizes)} rounds, and a record holds one "
                "evaluate_many call: audit a one-round search (esa, random-walk, gaussian, ...)"
            )
        record = self.records[-1]
        incumbent_row = result.incumbent_score is not None
        record.update(
            incumbent_row=incumbent_row,
            best_index=result.best_index,
            committed=result.committed,
            selected_row=(result.best_index + int(incumbent_row)) if result.committed else None,
            **fields,
        )
        return record

    def write_jsonl(self, path: str | os.PathLike, records: Sequence[dict[str, Any]] | None = None) -> None:
        """Append ``records`` (default: all of them) to ``path``, one JSON object per line."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as file:
            for record in self.records if records is None else records:
                file.write(json.dumps(record, allow_nan=True) + "\n")

    def __repr__(self) -> str:
        return f"SelectionAudit(selector={type(self.selector).__name__}, audits={sorted(self.audits)})"


def _as_list(scores: Any) -> list[float]:
    if isinstance(scores, torch.Tensor):
        return [float(x) for x in scores.detach().cpu().reshape(-1)]
    return [float(x) if x is not None else math.nan for x in scores]


def _extras(name: str, evaluator: Any) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    steps = getattr(evaluator, "last_env_steps", None)
    if steps is not None:
        extras[f"{name}_env_steps"] = int(steps)
    returns = getattr(evaluator, "last_returns", None)
    if isinstance(returns, torch.Tensor):
        extras[f"{name}_returns"] = returns.tolist()
    return extras
