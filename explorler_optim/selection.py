"""Selection rules: which scored candidate :class:`~explorler_optim.Explorer` keeps.

A rule picks one candidate from the scores of a search (and, for rules that need it, each
candidate's success rate), and says whether that candidate beats the incumbent: the explorer
commits the pick only then (with ``include_incumbent``), whatever the rule. :func:`make_selection`
builds a rule by name.

==================  =======================================================================
``argmax``          the highest score (the paper's rule and the default)
``tournament``      the best of ``size`` candidates drawn at random (seeded by the explorer)
``success-first``   the highest success rate, ties broken by the score (mean return)
==================  =======================================================================
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import Tensor

from .search import build_named

__all__ = [
    "ArgmaxSelection",
    "SelectionRule",
    "SuccessFirstSelection",
    "TournamentSelection",
    "make_selection",
]

Outcome = tuple[float, "float | None"]  # a scored policy: (score, success rate or None)


class SelectionRule(abc.ABC):
    """Base class: picks a candidate from a search's scores.

    Attributes:
        needs_success: whether :meth:`select` needs the candidates' success rates (the explorer
            then reads them from the evaluator's ``last_success_rates`` and raises if it has none).
    """

    needs_success: bool = False

    @abc.abstractmethod
    def select(
        self, scores: Tensor, success_rates: Tensor | None = None, generator: torch.Generator | None = None
    ) -> int:
        """The index of the chosen candidate.

        Args:
            scores: ``(m,)`` float64 scores (higher is better; ``-inf`` for a skipped candidate).
            success_rates: ``(m,)`` fractions of successful episodes, or ``None`` when the
                evaluator reports none (only rules with ``needs_success`` require them).
            generator: the random source of stochastic rules (the explorer's, so that a run is
                reproducible from its seed).
        """

    def beats(self, candidate: Outcome, incumbent: Outcome) -> bool:
        """Whether ``candidate`` beats ``incumbent``, each a ``(score, success rate or None)`` pair
        (default: a strictly higher score).

        Example:
            >>> rule = ArgmaxSelection()
            >>> rule.beats((2.0, None), (1.0, None)), rule.beats((1.0, 0.0), (1.0, 1.0))
            (True, False)
        """
        return candidate[0] > incumbent[0]

    def extra_repr(self) -> str:
        """The settings ``repr`` shows inside the parentheses (override to add them)."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class ArgmaxSelection(SelectionRule):
    """The highest score; the first one on ties (the paper's rule, and the explorer's default).

    Example:
        >>> ArgmaxSelection().select(torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64))
        1
    """

    def select(
        self, scores: Tensor, success_rates: Tensor | None = None, generator: torch.Generator | None = None
    ) -> int:
        return int(torch.argmax(scores))


class TournamentSelection(SelectionRule):
    """The best of ``size`` candidates drawn uniformly at random without replacement.

    A smaller tournament gives the noise in the scores less pull: the pick is the best of a few, not
    the best of all, so it is less often the luckiest draw. ``size`` at least the number of
    candidates is ``argmax``. The draw uses the explorer's generator, so a run is reproducible from
    its seed.

    Args:
        size: candidates per tournament (at least 1).

    Example:
        >>> rule = TournamentSelection(size=2)
        >>> scores = torch.tensor([5.0, 1.0, 2.0, 3.0], dtype=torch.float64)
        >>> picks = [rule.select(scores, generator=torch.Generator().manual_seed(s)) for s in range(3)]
        >>> picks == [rule.select(scores, generator=torch.Generator().manual_seed(s)) for s in range(3)]
        True
    """

    def __init__(self, size: int = 3) -> None:
        if isinstance(size, bool) or int(size) != size or size < 1:
            raise ValueError(f"TournamentSelection: size must be a positive integer, got {size!r}")
        self.size = int(size)

    def select(
        self, scores: Tensor, success_rates: Tensor | None = None, generator: torch.Generator | None = None
    ) -> int:
        num = int(scores.shape[0])
        if self.size >= num:
            return int(torch.argmax(scores))
        drawn = torch.randperm(num, generator=generator)[: self.size].sort().values
        return int(drawn[torch.argmax(scores[drawn])])

    def extra_repr(self) -> str:
        return f"size={self.size}"


class SuccessFirstSelection(SelectionRule):
    """The highest success rate; among those, the highest score (mean return).

    Success rates come from an evaluator that reads ``info["is_success"]`` at the end of each
    episode (``PolicyEvaluator`` does); an env that never reports it makes the explorer raise. The
    incumbent rule compares (success rate, score) pairs the same way.

    Example:
        >>> rule = SuccessFirstSelection()
        >>> scores = torch.tensor([10.0, 5.0, 7.0], dtype=torch.float64)
        >>> rule.select(scores, torch.tensor([0.0, 1.0, 1.0]))  # success beats a higher return
        2
        >>> rule.beats((5.0, 1.0), (10.0, 0.5))  # (score, success rate) pairs
        True
    """

    needs_success = True

    def select(
        self, scores: Tensor, success_rates: Tensor | None = None, generator: torch.Generator | None = None
    ) -> int:
        if success_rates is None:
            raise ValueError(
                "success-first selection needs the candidates' success rates: score them with an "
                "evaluator that reports last_success_rates (PolicyEvaluator, on an env whose info has "
                "'is_success'), or choose selection='argmax'"
            )
        rates = success_rates.to(torch.float64)
        best_rate = rates.max()
        masked = torch.where(rates == best_rate, scores, torch.full_like(scores, -math.inf))
        if bool(torch.isneginf(masked).all()):  # every top-rate candidate was skipped (-inf)
            return int(torch.argmax(rates))
        return int(torch.argmax(masked))

    def beats(self, candidate: Outcome, incumbent: Outcome) -> bool:
        if candidate[1] is None or incumbent[1] is None:
            raise ValueError("success-first selection compares success rates: pass both")
        return (candidate[1], candidate[0]) > (incumbent[1], incumbent[0])


_RULES: dict[str, type[SelectionRule]] = {
    "argmax": ArgmaxSelection,
    "tournament": TournamentSelection,
    "success-first": SuccessFirstSelection,
}


def make_selection(name: str | SelectionRule = "argmax", **options: Any) -> SelectionRule:
    """The selection rule called ``name``, built with ``options``.

    Args:
        name: ``"argmax"`` (:class:`ArgmaxSelection`, the default), ``"tournament"``
            (:class:`TournamentSelection`) or ``"success-first"`` (:class:`SuccessFirstSelection`);
            or a rule already built, returned as is.
        **options: the rule's constructor arguments (e.g. ``size=3`` for a tournament).

    Raises:
        ValueError: an unknown name, an option the rule does not take (both name the choices), or
            options given with a rule already built.

    Example:
        >>> make_selection("tournament", size=2)
        TournamentSelection(size=2)
    """
    rule: SelectionRule = build_named("make_selection", "selection", _RULES, name, options, SelectionRule)
    return rule
