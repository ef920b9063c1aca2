"""``Explorer``: ExploRLer's anchor ring, search, scoring and commit, for any training loop.

:class:`Explorer` needs no optimizer: it snapshots a set of parameters when told to
(:meth:`Explorer.record`), and :meth:`Explorer.explore` searches the space the snapshots span, scores
the candidates and moves the parameters to the best one. Training loops that step through a torch
optimizer can use :class:`~explorler_optim.ExploRLerOptimizer`, a thin wrapper around an optimizer
and an ``Explorer``; loops that move the policy some other way (a TRPO line search, a callback in
another library) call the ``Explorer`` directly.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .params import flatten_params, real_view, searched_params, split_flat
from .search import EmptySpaceSearch, SearchOperator, SearchRounds
from .selection import ArgmaxSelection, SelectionRule
from .subspace import AnchorSubspace

# flatten_params and split_flat live in .params; they are importable from here as before
__all__ = ["BatchEvaluator", "Evaluate", "ExploreResult", "Explorer", "flatten_params", "split_flat"]

_STATE_VERSION = 1
_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
_STATE_KEYS = ("version", "num_params", "shapes", "anchor_dtype", "origin", "deltas", "cycles")


@runtime_checkable
class BatchEvaluator(Protocol):
    """An evaluator that scores many candidates in one call (e.g. batched or parallel rollouts)."""

    def evaluate_many(self, params: Sequence[Tensor], candidates: Sequence[Tensor]) -> Any:
        """Score candidates: ``candidates[i]`` has shape ``(N, *params[i].shape)``; return N scores."""


Evaluate = Callable[[], float] | BatchEvaluator


@dataclass(kw_only=True)
class ExploreResult:
    """What one :meth:`Explorer.explore` call did.

    Attributes:
        scores: ``(num_candidates,)`` float64 scores of the candidates (the incumbent excluded).
        incumbent_score: score of the parameters before the search, or ``None`` if not scored.
        best_index: index into ``scores`` of the best candidate.
        best_score: ``scores[best_index]``.
        committed: whether the parameters were moved to the best candidate.
        num_candidates: number of candidates scored (the incumbent excluded).
        distance: L2 distance the parameters moved (0.0 if nothing was committed).
        seconds: wall time of the whole call.
        search_seconds: wall time outside ``evaluate`` (building and loading candidates).
        num_anchors: anchors the search used.
        anchor_coords: ``(num_anchors, r)`` anchor coordinates in the anchors' orthonormal subspace.
        candidate_coords: ``(num_candidates, r)`` candidate coordinates in the same subspace.
        incumbent_coords: ``(r,)`` coordinates of the incumbent's projection onto that subspace.
        incumbent_offset: distance from the incumbent to that subspace.
        success_rates: ``(num_candidates,)`` fractions of successful episodes, when the evaluator
            reports them (``last_success_rates``), else ``None``.
        incumbent_success_rate: the incumbent's, when it was scored and success was reported.
        round_sizes: candidates scored in each round of a search that uses scores between rounds
            (e.g. ``(5, 5)``); empty for a one-round search.
    """

    scores: Tensor
    incumbent_score: float | None
    best_index: int
    best_score: float
    committed: bool
    num_candidates: int
    distance: float
    seconds: float
    search_seconds: float
    num_anchors: int = 0
    anchor_coords: Tensor = field(default_factory=lambda: torch.zeros(0, 0), repr=False)
    candidate_coords: Tensor = field(default_factory=lambda: torch.zeros(0, 0), repr=False)
    incumbent_coords: Tensor = field(default_factory=lambda: torch.zeros(0), repr=False)
    incumbent_offset: float = 0.0
    success_rates: Tensor | None = None
    incumbent_success_rate: float | None = None
    round_sizes: tuple[int, ...] = ()

    @property
    def gain(self) -> float | None:
        """``best_score - incumbent_score`` (``None`` when the incumbent was not scored)."""
        if self.incumbent_score is None:
            return None
        return self.best_score - self.incumbent_score

    @property
    def kept_row(self) -> int | None:
        """The row of the scored batch (as ``evaluate_many`` saw it) holding the parameters kept.

        After the search, training resumes from the committed candidate, or from the incumbent
        (row 0 when it was scored) when nothing was committed; ``None`` when the kept parameters
        were not scored. An evaluator that kept its episodes (``PolicyEvaluator(keep_transitions=
        True).episodes_of(row)``) thus hands over the on-policy episodes of the next iteration.

        Example:
            >>> result = ExploreResult(
            ...     scores=torch.tensor([1.0, 3.0]), incumbent_score=2.0, best_index=1, best_score=3.0,
            ...     committed=True, num_candidates=2, distance=0.5, seconds=0.1, search_seconds=0.01,
            ... )
            >>> result.kept_row
            2
        """
        scored_incumbent = self.incumbent_score is not None
        if len(self.round_sizes) > 1:  # the evaluator last saw the last round, without the incumbent
            last_round_start = self.num_candidates - self.round_sizes[-1]
            return (
                self.best_index - last_round_start
                if self.committed and self.best_index >= last_round_start
                else None
            )
        if self.committed:
            return self.best_index + int(scored_incumbent)
        return 0 if scored_incumbent else None

    def scalars(self) -> dict[str, float]:
        """The scalar values of this search worth logging, by name (e.g. for TensorBoard).

        Returns:
            ``best_score``, ``incumbent_score`` and ``gain`` (only when the incumbent was scored),
            ``committed`` (1.0 or 0.0), ``num_candidates``, ``distance``, ``seconds`` and
            ``search_seconds``, in that order; then, when success was reported,
            ``best_success_rate`` (the chosen candidate's) and ``incumbent_success_rate``.

        Example:
            >>> result = ExploreResult(
            ...     scores=torch.tensor([1.0, 3.0]), incumbent_score=2.0, best_index=1, best_score=3.0,
            ...     committed=True, num_candidates=2, distance=0.5, seconds=0.1, search_seconds=0.01,
            ... )
            >>> result.scalars()["gain"], result.scalars()["committed"]
            (1.0, 1.0)
            >>> for name, value in result.scalars().items():  # doctest: +SKIP
            ...     writer.add_scalar(f"explorler/{name}", value, global_step)
        """
        values: dict[str, float] = {"best_score": self.best_score}
        if self.incumbent_score is not None:
            values["incumbent_score"] = self.incumbent_score
        if self.gain is not None:
            values["gain"] = self.gain
        values.update(
            committed=float(self.committed),
            num_candidates=self.num_candidates,
            distance=self.distance,
            seconds=self.seconds,
            search_seconds=self.search_seconds,
        )
        if self.success_rates is not None and self.success_rates.numel() > self.best_index:
            values["best_success_rate"] = float(self.success_rates[self.best_index])
        if self.incumbent_success_rate is not None:
            values["incumbent_success_rate"] = self.incumbent_success_rate
        return values


class _InvalidScore(ValueError):
    pass


class _WrongCount(RuntimeError):
    pass


class _OneByOne:
    """A plain ``evaluate()`` as a batch evaluator: each row is loaded into the parameters in turn.

    Each score is validated as soon as it is returned, so an invalid one stops the scoring there;
    ``scoring`` names the row being scored, for the error of an ``evaluate`` that raises.
    ``last_success_rates`` gathers what ``evaluate`` reports after each call (``None`` if it
    reports none).
    """

    def __init__(
        self, evaluate: Callable[[], Any], validate: Callable[[Any, str], float], labels: list[str]
    ) -> None:
        self.evaluate = evaluate
        self.validate = validate
        self.labels = labels
        self.scoring = labels[0]
        self.last_success_rates: list[float] | None = None

    def evaluate_many(self, params: Sequence[Tensor], candidates: Sequence[Tensor]) -> list[float]:
        scores = []
        rates: list[float] | None = []
        for row, label in enumerate(self.labels):
            self.scoring = label
            for p, values in zip(params, candidates, strict=True):
                p.copy_(values[row])
            scores.append(self.validate(self.evaluate(), label))
            rate = _success_rates(self.evaluate, 1)
            rates = None if rates is None or rate is None else [*rates, rate[0]]
        self.last_success_rates = rates
        return scores


@dataclass
class _Candidates:
    """One search's output: candidate rows in parameter space and the geometry for the result."""

    rows: Tensor  # (num_candidates, P) flattened candidates
    coords: Tensor  # (num_candidates, r) their coordinates in the anchors' subspace
    anchor_coords: Tensor
    incumbent_coords: Tensor
    incumbent_offset: float
    backup: list[Tensor]  # the incumbent's parameters, restored on any failure


class Explorer:
    r"""ExploRLer's anchor-explore-commit cycle over a set of parameters, for any training loop.

    * :meth:`record` snapshots ``params`` as an *anchor* (e.g. at the end of each PPO epoch, or
      after each TRPO iteration);
    * :meth:`explore` runs ``search`` on the anchors, scores the candidates with ``evaluate`` (and
      the current parameters, the *incumbent*, when ``include_incumbent``), loads the best into the
      parameters if it beats the incumbent, and starts a new cycle.

    The search runs in the anchors' own low-dimensional affine subspace, so its cost grows with the
    number of parameters only through a few matrix products. Anchors are stored as deltas from the
    cycle's first snapshot.

    Args:
        params: the parameters searched (e.g. the actor's, never the critic's): floating-point, or
            complex, which are searched through their real view (:func:`torch.view_as_real`).
        max_anchors: anchors kept; older ones are dropped first.
        search: the candidate generator (default: :class:`EmptySpaceSearch` with the paper's settings).
        include_incumbent: also score the current parameters and commit only if a candidate beats
            them. ``False`` always commits the best candidate (the paper's behaviour).
        reset_state: after a commit, clear ``optimizer``'s state (e.g. Adam moments) of ``params``,
            as if training resumed with a fresh optimizer. Without an ``optimizer`` it does nothing.
        seed: seeds the random source of stochastic searches; ``explore()`` is deterministic given the
            seed and the scores. ``None`` draws a fresh seed without touching torch's global RNG.
        on_invalid: what a non-finite or non-numeric score does: ``"raise"`` (restore the
            parameters and raise ``ValueError``) or ``"skip"`` (score that candidate ``-inf``).
        anchor_dtype: dtype of the stored anchors (default: float64 if any parameter is float64,
            else float32). ``torch.bfloat16`` halves anchor memory at little cost.
        anchor_device: device of the stored anchors and of the search (default: that of the first
            parameter); ``"cpu"`` keeps a GPU model's anchors off the GPU.
        optimizer: the optimizer training ``params``, if any: only used to clear its state after a
            commit (``reset_state``). The explorer never steps it.
        selection: the rule that picks a candidate (default: :class:`~explorler_optim.selection.
            ArgmaxSelection`, the highest score; see :func:`~explorler_optim.selection.make_selection`).
            The incumbent rule applies to every rule: with ``include_incumbent`` the pick is
            committed only if it beats the incumbent by the rule's own comparison.

    Example:
        >>> policy = torch.nn.Linear(4, 2)
        >>> explorer = Explorer(policy.parameters(), seed=0)
        >>> def evaluate():  # higher is better; e.g. the mean return of a few episodes
        ...     return -policy.weight.square().sum().item()
        >>> for epoch in range(10):
        ...     with torch.no_grad():
        ...         _ = policy.weight.mul_(0.9).add_(0.01)  # any update rule
        ...     explorer.record()
        >>> result = explorer.explore(evaluate)
        >>> result.num_candidates, explorer.num_anchors
        (10, 0)
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        *,
        max_anchors: int = 10,
        search: SearchOperator | None = None,
        include_incumbent: bool = True,
        reset_state: bool = True,
        seed: int | None = None,
        on_invalid: str = "raise",
        anchor_dtype: torch.dtype | None = None,
        anchor_device: torch.device | str | None = None,
        optimizer: Optimizer | None = None,
        selection: SelectionRule | None = None,
    ) -> None:
        unique = searched_params(params)
        self.max_anchors = max_anchors
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        if search is None:
            search = EmptySpaceSearch()
        if not isinstance(search, SearchOperator):
            raise TypeError(f"search must be a SearchOperator (e.g. EmptySpaceSearch()), got {search!r}")
        if selection is None:
            selection = ArgmaxSelection()
        if not isinstance(selection, SelectionRule):
            raise TypeError(
                f"selection must be a SelectionRule (e.g. make_selection('tournament')), got {selection!r}"
            )
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}"
            )
        work_dtype = (
            torch.float64 if any(real_view(p).dtype == torch.float64 for p in unique) else torch.float32
        )
        anchor_dtype = anchor_dtype if anchor_dtype is not None else work_dtype
        if not anchor_dtype.is_floating_point:
            raise ValueError(f"anchor_dtype must be a float dtype, got {anchor_dtype}")

        self.params: list[Tensor] = unique
        self.search = search
        self.selection = selection
        self.include_incumbent = bool(include_incumbent)
        self.reset_state = bool(reset_state)
        self.on_invalid = on_invalid
        self.optimizer = optimizer
        self.anchor_dtype = anchor_dtype
        self.anchor_device = torch.device(anchor_device) if anchor_device is not None else unique[0].device
        self._work_dtype = work_dtype
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(int(seed))
        self._shapes = [tuple(real_view(p).shape) for p in unique]  # of what the search moves
        self._origin: Tensor | None = None
        self._deltas: list[Tensor] = []
        self.cycles = 0
        self.last_result: ExploreResult | None = None

    # ----------------------------------------------------------------- anchors
    @property
    def max_anchors(self) -> int:
        """Anchors kept; recording more drops the oldest (as does lowering it)."""
        return self._max_anchors

    @max_anchors.setter
    def max_anchors(self, value: int) -> None:
        if isinstance(value, bool) or int(value) != value or value < 2:
            raise ValueError(f"max_anchors must be an integer >= 2, got {value!r}")
        self._max_anchors = int(value)
        if hasattr(self, "_deltas"):
            self._keep_newest()

    def _keep_newest(self) -> None:
        del self._deltas[: max(0, len(self._deltas) - self._max_anchors)]

    @property
    def num_anchors(self) -> int:
        """Anchors held now."""
        return len(self._deltas)

    @property
    def can_explore(self) -> bool:
        """Whether :meth:`explore` can run now (it needs at least 2 anchors)."""
        return self.num_anchors >= 2

    @property
    def num_params(self) -> int:
        """Number of real values searched (``P``; a complex element counts as two)."""
        return sum(math.prod(shape) for shape in self._shapes)

    def _check_shapes(self) -> None:
        for index, (p, shape) in enumerate(zip(self.params, self._shapes, strict=True)):
            if tuple(real_view(p).shape) != shape:
                raise ValueError(
                    f"params[{index}] changed shape from {shape} to {tuple(real_view(p).shape)} since it was "
                    "registered; build a new explorer for the new architecture"
                )

    def _flatten(self) -> Tensor:
        return flatten_params(self.params, self.anchor_device, self._work_dtype)

    @torch.no_grad()
    def record(self) -> None:
        """Snapshot ``params`` as an anchor (oldest dropped beyond ``max_anchors``)."""
        self._check_shapes()
        flat = self._flatten()
        if self._origin is None:
            self._origin = flat
        self._deltas.append((flat - self._origin).to(self.anchor_dtype))
        self._keep_newest()

    def clear_anchors(self) -> None:
        """Drop all anchors and start a new cycle."""
        self._origin = None
        self._deltas = []

    def anchors(self) -> Tensor:
        """The anchors as a ``(num_anchors, P)`` tensor (reconstructed from the stored deltas)."""
        if self._origin is None:
            return torch.zeros(0, self.num_params, dtype=self._work_dtype, device=self.anchor_device)
        return self._origin + torch.stack(self._deltas).to(self._work_dtype)

    # ----------------------------------------------------------------- explore
    def explore(self, evaluate: Evaluate) -> ExploreResult:
        """Search the space between the anchors, score candidates, commit the best; new cycle.

        Args:
            evaluate: either a zero-argument callable returning a score (higher is better), called
                once per candidate with that candidate loaded into ``params`` in place, or an object
                with ``evaluate_many(params, candidates)`` that scores all candidates in one call
                (``candidates[i]`` has shape ``(N, *params[i].shape)``; with ``include_incumbent``,
                row 0 is the incumbent) and returns N scores. Both run under ``torch.no_grad()``.

        Returns:
            An :class:`ExploreResult`.

        Raises:
            ValueError: fewer than 2 anchors, or an invalid score with ``on_invalid="raise"``.
            RuntimeError: ``evaluate`` raised or returned the wrong number of scores; the parameters
                and anchors are left as they were.
        """
        started = time.perf_counter()
        self._check_ready(evaluate)
        subspace = AnchorSubspace(torch.stack(self._deltas), origin=self._origin)
        rounds = self.search.start(subspace.coords, self._generator)
        candidates = self._build_candidates(subspace, rounds.ask())
        num_anchors = self.num_anchors
        scored = self._score_rounds(evaluate, subspace, rounds, candidates)
        all_scores, all_rates = scored.scores, scored.success_rates
        first = int(self.include_incumbent)
        incumbent_score = all_scores[0] if self.include_incumbent else None
        incumbent_rate = all_rates[0] if all_rates is not None and self.include_incumbent else None
        scores = torch.tensor(all_scores[first:], dtype=torch.float64)
        rates = torch.tensor(all_rates[first:], dtype=torch.float64) if all_rates is not None else None
        if rates is None and self.selection.needs_success:
            self._load(candidates.backup)
            raise ValueError(
                f"{self.selection!r} needs success rates, but {type(evaluate).__name__} reported none: "
                "the env's info never had 'is_success' at an episode's end (gymnasium-robotics' "
                "convention), or the evaluator has no last_success_rates; choose another selection "
                "(e.g. argmax). Parameters and anchors were restored"
            )
        best_index = self.selection.select(scores, rates, self._generator)
        best_score = float(scores[best_index])
        best_rate = float(rates[best_index]) if rates is not None else None
        committed, distance = self._commit(
            candidates, best_index, (best_score, best_rate), (incumbent_score, incumbent_rate)
        )
        self.clear_anchors()
        self.cycles += 1
        seconds = time.perf_counter() - started
        self.last_result = ExploreResult(
            scores=scores,
            incumbent_score=incumbent_score,
            best_index=best_index,
            best_score=best_score,
            committed=committed,
            num_candidates=candidates.rows.shape[0],
            distance=distance,
            seconds=seconds,
            search_seconds=seconds - scored.seconds,
            num_anchors=num_anchors,
            anchor_coords=candidates.anchor_coords.detach().cpu(),
            candidate_coords=candidates.coords.detach().cpu(),
            incumbent_coords=candidates.incumbent_coords.detach().cpu(),
            incumbent_offset=candidates.incumbent_offset,
            success_rates=rates,
            incumbent_success_rate=incumbent_rate,
            round_sizes=tuple(scored.round_sizes) if len(scored.round_sizes) > 1 else (),
        )
        return self.last_result

    def _check_ready(self, evaluate: Evaluate) -> None:
        """Raise if a search cannot run now."""
        if self.num_anchors < 2:
            raise ValueError(
                f"explore() needs at least 2 anchors, but {self.num_anchors} were recorded this cycle; "
                "call opt.record() at each checkpoint (e.g. the end of every epoch) before explore()"
            )
        if not hasattr(evaluate, "evaluate_many") and not callable(evaluate):
            raise TypeError(
                "evaluate must be a zero-argument callable returning a score, or an object with "
                f"evaluate_many(params, candidates); got {type(evaluate).__name__}"
            )
        self._check_shapes()

    def _build_candidates(self, subspace: AnchorSubspace, coords: Tensor | None) -> _Candidates:
        """Lift the search's first round of points from the anchors' subspace to parameter space."""
        self._check_coords(coords, subspace)
        assert coords is not None
        incumbent_coords, incumbent_offset = subspace.project(self._flatten())
        return _Candidates(
            rows=subspace.lift(coords, dtype=self._work_dtype),
            coords=coords,
            anchor_coords=subspace.coords,
            incumbent_coords=incumbent_coords,
            incumbent_offset=incumbent_offset,
            backup=[p.detach().clone() for p in self.params],
        )

    def _check_coords(self, coords: Tensor | None, subspace: AnchorSubspace) -> None:
        rank = subspace.coords.shape[1]
        if coords is None or coords.dim() != 2 or coords.shape[0] == 0 or coords.shape[1] != rank:
            shape = None if coords is None else tuple(coords.shape)
            raise ValueError(
                f"{self.search!r} returned points of shape {shape}; a SearchOperator "
                f"returns (num_candidates >= 1, {rank}) coordinates in the anchors' "
                "subspace (the shape of its anchor_coords argument's rows)"
            )

    def _score_rounds(
        self, evaluate: Evaluate, subspace: AnchorSubspace, rounds: SearchRounds, candidates: _Candidates
    ) -> _Scored:
        """Score the first round (with the incumbent), then, while the search asks for more, tell it
        each round's scores and score the next; ``candidates`` grows by every later round's rows."""
        scored = _Scored()
        rows, incumbent = candidates.rows, self.include_incumbent
        try:
            while True:
                offset = sum(scored.round_sizes)
                values, seconds, rates = self._score(evaluate, candidates, rows, incumbent, offset)
                scored.add(values, rates, seconds, rows.shape[0])
                rounds.tell(torch.tensor(values[int(incumbent) :], dtype=torch.float64))
                coords = rounds.ask()
                if coords is None:
                    return scored
                self._check_coords(coords, subspace)
                rows, incumbent = subspace.lift(coords, dtype=self._work_dtype), False
                candidates.rows = torch.cat([candidates.rows, rows])
                candidates.coords = torch.cat([candidates.coords, coords])
        except (ValueError, RuntimeError, TypeError):
            self._load(candidates.backup)  # a later round's search failed: nothing committed
            raise

    def _labels(self, num_candidates: int, incumbent: bool, offset: int = 0) -> list[str]:
        if offset:
            labels = [f"candidate {offset + i} (a later round)" for i in range(num_candidates)]
        else:
            labels = [f"candidate {i} of {num_candidates}" for i in range(num_candidates)]
        return ["the incumbent", *labels] if incumbent else labels

    def _score(
        self, evaluate: Evaluate, candidates: _Candidates, rows: Tensor, incumbent: bool, offset: int
    ) -> tuple[list[float], float, list[float] | None]:
        """Score ``rows`` (the incumbent as row 0, if asked) in one ``evaluate_many`` call.

        A plain callable is adapted (:class:`_OneByOne`). Returns the scores, the seconds spent in
        ``evaluate_many`` and the success rates (if the evaluator reports them). On any failure the
        incumbent's parameters are loaded back before the error leaves.
        """
        labels = self._labels(rows.shape[0], incumbent, offset)
        evaluator = (
            evaluate if isinstance(evaluate, BatchEvaluator) else _OneByOne(evaluate, self._validate, labels)
        )
        pieces = self._split(rows)
        if incumbent:
            pieces = [torch.cat([b.unsqueeze(0), c]) for b, c in zip(candidates.backup, pieces, strict=True)]
        tick = time.perf_counter()
        with self._restoring(candidates.backup, evaluator, len(labels)):
            with torch.no_grad():
                raw = evaluator.evaluate_many(list(self.params), pieces)
            seconds = time.perf_counter() - tick
            del pieces
            return self._scores(raw, labels, incumbent), seconds, _success_rates(evaluator, len(labels))

    @contextmanager
    def _restoring(self, backup: list[Tensor], evaluator: BatchEvaluator, count: int) -> Iterator[None]:
        """Load ``backup`` back into the parameters if scoring fails, and say so in the error."""
        try:
            yield
        except _InvalidScore as error:
            self._load(backup)
            raise ValueError(f"{error}; parameters and anchors were restored") from None
        except _WrongCount as error:
            self._load(backup)
            raise RuntimeError(f"{error}. Parameters and anchors were restored") from None
        except BaseException as error:
            self._load(backup)
            name, what = "evaluate_many", f"{count} candidates"
            if isinstance(evaluator, _OneByOne):
                name, what = "evaluate", evaluator.scoring
            if not isinstance(error, Exception):
                _add_note(error, what)
                raise
            raise RuntimeError(
                f"{name} raised while scoring {what}; parameters and anchors were "
                f"restored: {type(error).__name__}: {error}"
            ) from error

    def _scores(self, raw: Any, labels: list[str], incumbent: bool) -> list[float]:
        """``evaluate_many``'s output as one validated float per row, or an error naming the layout."""
        if isinstance(raw, Tensor):
            raw = raw.detach().cpu().reshape(-1).tolist()
        raw = list(raw)
        if len(raw) != len(labels):
            num_candidates = len(labels) - int(incumbent)
            layout = (
                f"row 0 is the incumbent (include_incumbent=True), rows 1-{num_candidates} the "
                f"{num_candidates} search candidates"
                if incumbent
                else "one row per search candidate (include_incumbent=False, or a later round)"
            )
            raise _WrongCount(
                f"evaluate_many returned {len(raw)} scores for {len(labels)} candidates: {layout}; "
                "return one score per row"
            )
        return [self._validate(value, label) for value, label in zip(raw, labels, strict=True)]

    def _validate(self, value: Any, label: str) -> float:
        try:
            if isinstance(value, Tensor):
                if value.numel() != 1:
                    raise TypeError(f"a tensor with {value.numel()} elements")
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"a {type(value).__name__}")
            score = float(value)
        except (TypeError, ValueError) as error:
            if self.on_invalid == "skip":
                return -math.inf
            raise _InvalidScore(f"evaluate returned a non-numeric score for {label}: {error}") from None
        if not math.isfinite(score):
            if self.on_invalid == "skip":
                return -math.inf
            raise _InvalidScore(
                f"evaluate returned a non-finite score ({score}) for {label}; "
                "pass on_invalid='skip' to score such candidates as -inf"
            )
        return score

    def _commit(
        self,
        candidates: _Candidates,
        best_index: int,
        best: tuple[float, float | None],
        incumbent: tuple[float | None, float | None],
    ) -> tuple[bool, float]:
        """Load the chosen candidate if it beats the incumbent by the selection rule's comparison (else
        restore the incumbent); ``best`` and ``incumbent`` are (score, success rate) pairs; return
        (committed, distance)."""
        best_score, incumbent_score = best[0], incumbent[0]
        if incumbent_score is not None:
            committed = self.selection.beats(best, (incumbent_score, incumbent[1]))
        else:
            committed = best_score > -math.inf
        if not committed:
            self._load(candidates.backup)
            return False, 0.0
        chosen = self._split(candidates.rows[best_index : best_index + 1])
        self._load([value[0] for value in chosen])
        distance = math.sqrt(
            sum(
                float((real_view(p.detach()).double() - real_view(b).double()).square().sum())
                for p, b in zip(self.params, candidates.backup, strict=True)
            )
        )
        if self.reset_state and self.optimizer is not None:
            for p in self.params:
                self.optimizer.state.pop(p, None)
        return True, distance

    def _split(self, flat_rows: Tensor) -> list[Tensor]:
        """Split ``(N, P)`` rows into per-parameter ``(N, *shape)`` tensors like each parameter."""
        pieces = split_flat(flat_rows, self._shapes)
        return [_like(piece, p) for p, piece in zip(self.params, pieces, strict=True)]

    @torch.no_grad()
    def _load(self, values: Sequence[Tensor]) -> None:
        for p, value in zip(self.params, values, strict=True):
            p.copy_(value)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Anchors, cycle count and RNG state: tensors and plain Python values only.

        ``torch.load(weights_only=True)`` reads it. The parameters themselves are not included;
        save them with the model.
        """
        return {
            "version": _STATE_VERSION,
            "num_params": self.num_params,
            "shapes": [list(shape) for shape in self._shapes],
            "anchor_dtype": str(self.anchor_dtype).removeprefix("torch."),
            "origin": None if self._origin is None else self._origin.detach().cpu().clone(),
            "deltas": None if not self._deltas else torch.stack(self._deltas).detach().cpu().clone(),
            "cycles": self.cycles,
            "generator_state": self._generator.get_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; nothing changes if the dict does not fit this explorer."""
        dtype = self._check_state(state_dict)
        origin, deltas = state_dict["origin"], state_dict["deltas"]
        self._origin = None if origin is None else origin.to(self.anchor_device, self._work_dtype)
        self.anchor_dtype = dtype
        self._deltas = [] if deltas is None else [row.to(self.anchor_device, dtype) for row in deltas]
        self._keep_newest()  # saved with a larger max_anchors: the newest are the ones record keeps
        self.cycles = int(state_dict["cycles"])
        self._generator.set_state(state_dict["generator_state"])

    def _check_state(self, state_dict: dict[str, Any]) -> torch.dtype:
        missing = [key for key in (*_STATE_KEYS, "generator_state") if key not in state_dict]
        if missing:
            raise ValueError(
                f"not an Explorer state dict: missing {missing}; pass what Explorer.state_dict() returned"
            )
        shapes = [tuple(shape) for shape in state_dict["shapes"]]
        if shapes != self._shapes:
            raise ValueError(
                f"the state dict was saved for explored parameters of shapes {shapes}, but this "
                f"explorer searches {self._shapes}; build it with the same explore_params"
            )
        dtype = _DTYPES.get(state_dict["anchor_dtype"])
        if dtype is None:
            raise ValueError(f"unknown anchor dtype {state_dict['anchor_dtype']!r} in the state dict")
        return dtype

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(params={len(self.params)} tensors ({self.num_params:,} values), "
            f"search={self.search!r}, selection={self.selection!r}, max_anchors={self.max_anchors}, "
            f"include_incumbent={self.include_incumbent}, reset_state={self.reset_state}, "
            f"on_invalid={self.on_invalid!r}, anchor_dtype={self.anchor_dtype}, "
            f"anchors={self.num_anchors}, cycles={self.cycles})"
        )


def _like(piece: Tensor, param: Tensor) -> Tensor:
    """``piece`` (a parameter's real view, batched) on ``param``'s device and in its dtype."""
    piece = piece.to(device=param.device, dtype=real_view(param).dtype)
    return torch.complex(piece[..., 0], piece[..., 1]) if param.is_complex() else piece


@dataclass
class _Scored:
    """A search's scores, round by round: the incumbent first when it was scored."""

    scores: list[float] = field(default_factory=list)
    success_rates: list[float] | None = field(default_factory=list)  # None: some call reported none
    seconds: float = 0.0  # in the evaluator
    round_sizes: list[int] = field(default_factory=list)  # candidates of each round

    def add(self, scores: list[float], rates: list[float] | None, seconds: float, size: int) -> None:
        self.scores += scores
        self.success_rates = (
            None if self.success_rates is None or rates is None else self.success_rates + rates
        )
        self.seconds += seconds
        self.round_sizes.append(size)


def _success_rates(evaluate: Any, count: int) -> list[float] | None:
    """The evaluator's success rates of its last call (``last_success_rates``), if it reports them."""
    rates = getattr(evaluate, "last_success_rates", None)
    if rates is None:
        return None
    values = torch.as_tensor(rates, dtype=torch.float64).reshape(-1).tolist()
    return values if len(values) == count else None


def _add_note(error: BaseException, what: str) -> None:
    """Tell a KeyboardInterrupt (or other non-Exception) what it interrupted and what was kept."""
    if hasattr(error, "add_note"):
        error.add_note(
            f"raised while ExploRLer's explore() was scoring {what}; "
            "the parameters were restored and the anchors kept"
        )
