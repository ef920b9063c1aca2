"""``ExploRLerOptimizer``: wrap any torch optimizer, record anchors, search the space between them."""

from __future__ import annotations

import math
import numbers
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .search import EmptySpaceSearch, SearchOperator
from .subspace import AnchorSubspace

__all__ = ["ExploRLerOptimizer", "ExploreResult", "BatchEvaluator"]

_STATE_VERSION = 1
_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


@runtime_checkable
class BatchEvaluator(Protocol):
    """An evaluator that scores many candidates in one call (e.g. batched or parallel rollouts)."""

    def evaluate_many(self, params: list[torch.nn.Parameter], candidates: list[Tensor]) -> Any:
        """Score candidates: ``candidates[i]`` has shape ``(N, *params[i].shape)``; return N scores."""


Evaluate = Callable[[], float] | BatchEvaluator


@dataclass
class ExploreResult:
    """What one :meth:`ExploRLerOptimizer.explore` call did.

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

    @property
    def gain(self) -> float | None:
        """``best_score - incumbent_score`` (``None`` when the incumbent was not scored)."""
        if self.incumbent_score is None:
            return None
        return self.best_score - self.incumbent_score


class _InvalidScore(ValueError):
    pass


class ExploRLerOptimizer(Optimizer):
    r"""Wraps a torch optimizer and adds ExploRLer's anchor-explore-commit cycle.

    Training through the wrapper is exactly training with the wrapped optimizer: :meth:`step`,
    :meth:`zero_grad`, ``param_groups``, ``state`` and ``defaults`` are the inner optimizer's own,
    forwarded live, so LR schedulers, hooks and ``load_state_dict`` on either object are seen by
    both. On top of that:

    * :meth:`record` snapshots ``explore_params`` as an *anchor* (e.g. at the end of each PPO epoch);
    * :meth:`explore` runs ``search`` on the anchors, scores the candidates with ``evaluate`` (and the
      current parameters, the *incumbent*, when ``include_incumbent``), loads the best into the
      parameters if it beats the incumbent, and starts a new cycle.

    The search runs in the anchors' own low-dimensional affine subspace, so its cost grows with the
    number of parameters only through a few matrix products.

    Args:
        optimizer: the torch optimizer to wrap (e.g. ``torch.optim.Adam``).
        explore_params: parameters searched by :meth:`explore` (default: all parameters of
            ``optimizer``); each must belong to ``optimizer``.
        max_anchors: anchors kept; older ones are dropped first.
        record_every: record an anchor automatically after every ``record_every``-th :meth:`step`;
            ``None`` records only when :meth:`record` is called.
        search: the candidate generator (default: :class:`EmptySpaceSearch` with the paper's settings).
        include_incumbent: also score the current parameters and commit only if a candidate beats
            them. ``False`` always commits the best candidate (the paper's behaviour).
        reset_state: after a commit, clear the inner optimizer's state (e.g. Adam moments) for
            ``explore_params``, as if training resumed with a fresh optimizer.
        seed: seeds the random source of stochastic searches; ``explore()`` is deterministic given the
            seed and the scores. ``None`` draws a fresh seed without touching torch's global RNG.
        on_invalid: what a non-finite or non-numeric score does: ``"raise"`` (restore the
            parameters and raise ``ValueError``) or ``"skip"`` (score that candidate ``-inf``).
        anchor_dtype: dtype of the stored anchors, which are deltas from the cycle's first snapshot
            (default: float64 if any explored parameter is float64, else float32). ``torch.bfloat16``
            halves anchor memory at little cost.
        anchor_device: device of the stored anchors and of the search (default: that of the first
            explored parameter); ``"cpu"`` keeps a GPU model's anchors off the GPU.

    Example:
        >>> policy = torch.nn.Linear(4, 2)
        >>> opt = ExploRLerOptimizer(torch.optim.Adam(policy.parameters(), lr=1e-2), seed=0)
        >>> def evaluate():  # higher is better; e.g. the mean return of a few episodes
        ...     return -policy.weight.square().sum().item()
        >>> for epoch in range(10):
        ...     loss = policy(torch.randn(32, 4)).square().mean()
        ...     opt.zero_grad(); loss.backward(); opt.step()
        ...     opt.record()
        >>> result = opt.explore(evaluate)
        >>> result.num_candidates
        20
    """

    def __init__(
        self,
        optimizer: Optimizer,
        explore_params: Iterable[torch.nn.Parameter] | None = None,
        *,
        max_anchors: int = 10,
        record_every: int | None = None,
        search: SearchOperator | None = None,
        include_incumbent: bool = True,
        reset_state: bool = True,
        seed: int | None = None,
        on_invalid: str = "raise",
        anchor_dtype: torch.dtype | None = None,
        anchor_device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}; "
                "build it first, e.g. ExploRLerOptimizer(torch.optim.Adam(model.parameters()))"
            )
        if isinstance(optimizer, ExploRLerOptimizer):
            raise TypeError("optimizer is already an ExploRLerOptimizer; wrap the inner optimizer once")
        owned = [p for group in optimizer.param_groups for p in group["params"]]
        owned_ids = {id(p) for p in owned}
        if explore_params is None:
            params = owned
        else:
            if isinstance(explore_params, Tensor):
                explore_params = [explore_params]
            params = list(explore_params)
        if not params:
            raise ValueError(
                "explore_params is empty; pass the parameters to search, e.g. actor.parameters()"
            )
        unique: list[torch.nn.Parameter] = []
        for index, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise ValueError(f"explore_params[{index}] is a {type(p).__name__}, not a Parameter")
            if id(p) not in owned_ids:
                raise ValueError(
                    f"explore_params[{index}] (shape {tuple(p.shape)}) is not optimised by the inner "
                    "optimizer; pass only parameters that are in its param_groups"
                )
            if not p.is_floating_point():
                raise ValueError(
                    f"explore_params[{index}] has dtype {p.dtype}; only float tensors can be searched"
                )
            if all(p is not q for q in unique):
                unique.append(p)
        if int(max_anchors) != max_anchors or max_anchors < 2:
            raise ValueError(f"max_anchors must be an integer >= 2, got {max_anchors!r}")
        if record_every is not None and (int(record_every) != record_every or record_every < 1):
            raise ValueError(f"record_every must be a positive integer or None, got {record_every!r}")
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        if search is None:
            search = EmptySpaceSearch()
        if not isinstance(search, SearchOperator):
            raise TypeError(f"search must be a SearchOperator (e.g. EmptySpaceSearch()), got {search!r}")

        # The hook dictionaries and step patching that torch.optim.Optimizer.__init__ would set up;
        # the base __init__ itself is not called because param_groups/state/defaults are forwarded.
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._patch_step_function()

        self.optimizer = optimizer
        self.explore_params: list[torch.nn.Parameter] = unique
        self.max_anchors = int(max_anchors)
        self.record_every = None if record_every is None else int(record_every)
        self.search = search
        self.include_incumbent = bool(include_incumbent)
        self.reset_state = bool(reset_state)
        self.on_invalid = on_invalid
        work_dtype = torch.float64 if any(p.dtype == torch.float64 for p in unique) else torch.float32
        self._work_dtype = work_dtype
        self.anchor_dtype = anchor_dtype if anchor_dtype is not None else work_dtype
        if not self.anchor_dtype.is_floating_point:
            raise ValueError(f"anchor_dtype must be a float dtype, got {self.anchor_dtype}")
        self.anchor_device = torch.device(anchor_device) if anchor_device is not None else unique[0].device
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(int(seed))
        self._shapes = [tuple(p.shape) for p in unique]
        self._origin: Tensor | None = None
        self._deltas: list[Tensor] = []
        self._steps = 0
        self._cycles = 0
        self.last_result: ExploreResult | None = None

    # ----------------------------------------------------------------- forwarded optimizer API
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the inner optimizer (it is not searched unless already explored)."""
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The inner optimizer's ``zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], float] | None = None):  # type: ignore[override]
        """The inner optimizer's ``step``; records an anchor after every ``record_every``-th call."""
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self._steps += 1
        if self.record_every is not None and self._steps % self.record_every == 0:
            self.record()
        return loss

    # ----------------------------------------------------------------- anchors
    @property
    def num_anchors(self) -> int:
        """Anchors held now."""
        return len(self._deltas)

    @property
    def num_params(self) -> int:
        """Number of scalar parameters searched (``P``)."""
        return sum(math.prod(shape) for shape in self._shapes)

    def _check_shapes(self) -> None:
        for index, (p, shape) in enumerate(zip(self.explore_params, self._shapes)):
            if tuple(p.shape) != shape:
                raise ValueError(
                    f"explore_params[{index}] changed shape from {shape} to {tuple(p.shape)} since it was "
                    "registered; build a new ExploRLerOptimizer for the new architecture"
                )

    def _flatten(self) -> Tensor:
        return torch.cat(
            [p.detach().reshape(-1).to(self.anchor_device, self._work_dtype) for p in self.explore_params]
        )

    @torch.no_grad()
    def record(self) -> None:
        """Snapshot ``explore_params`` as an anchor (oldest dropped beyond ``max_anchors``)."""
        self._check_shapes()
        flat = self._flatten()
        if self._origin is None:
            self._origin = flat
        self._deltas.append((flat - self._origin).to(self.anchor_dtype))
        if len(self._deltas) > self.max_anchors:
            self._deltas.pop(0)

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
    def _split(self, flat_rows: Tensor) -> list[Tensor]:
        """Split ``(N, P)`` rows into per-parameter ``(N, *shape)`` tensors on each parameter's device."""
        pieces, start = [], 0
        for p, shape in zip(self.explore_params, self._shapes):
            size = math.prod(shape)
            piece = flat_rows[:, start : start + size].reshape(flat_rows.shape[0], *shape)
            pieces.append(piece.to(device=p.device, dtype=p.dtype))
            start += size
        return pieces

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

    @torch.no_grad()
    def _load(self, values: Sequence[Tensor]) -> None:
        for p, value in zip(self.explore_params, values):
            p.copy_(value)

    def explore(self, evaluate: Evaluate) -> ExploreResult:
        """Search the space between the anchors, score candidates, commit the best; new cycle.

        Args:
            evaluate: either a zero-argument callable returning a score (higher is better), called
                once per candidate with that candidate loaded into ``explore_params`` in place, or
                an object with ``evaluate_many(params, candidates)`` that scores all candidates in one
                call (``candidates[i]`` has shape ``(N, *params[i].shape)``; with
                ``include_incumbent``, row 0 is the incumbent) and returns N scores. Both run under
                ``torch.no_grad()``.

        Returns:
            An :class:`ExploreResult`.

        Raises:
            ValueError: fewer than 2 anchors, or an invalid score with ``on_invalid="raise"``.
            RuntimeError: ``evaluate`` raised; the parameters and anchors are left as they were.
        """
        started = time.perf_counter()
        if self.num_anchors < 2:
            raise ValueError(
                f"explore() needs at least 2 anchors, but {self.num_anchors} were recorded this cycle; "
                "call opt.record() at each checkpoint (e.g. the end of every epoch) before explore()"
            )
        batch = hasattr(evaluate, "evaluate_many")
        if not batch and not callable(evaluate):
            raise TypeError(
                "evaluate must be a zero-argument callable returning a score, or an object with "
                f"evaluate_many(params, candidates); got {type(evaluate).__name__}"
            )
        self._check_shapes()
        backup = [p.detach().clone() for p in self.explore_params]
        num_anchors = self.num_anchors
        subspace = AnchorSubspace(torch.stack(self._deltas), origin=self._origin)
        coords = self.search.search(subspace.coords, self._generator)
        rows = subspace.lift(coords, dtype=self._work_dtype)
        num_candidates = rows.shape[0]
        incumbent_coords, incumbent_offset = subspace.project(self._flatten())
        anchor_coords = subspace.coords
        del subspace

        evaluate_seconds = 0.0
        labels = [f"candidate {i} of {num_candidates}" for i in range(num_candidates)]
        if self.include_incumbent:
            labels = ["the incumbent"] + labels
        current = f"{len(labels)} candidates"
        try:
            if batch:
                candidates = self._split(rows)
                if self.include_incumbent:
                    candidates = [torch.cat([b.unsqueeze(0), c]) for b, c in zip(backup, candidates)]
                tick = time.perf_counter()
                with torch.no_grad():
                    raw = evaluate.evaluate_many(list(self.explore_params), candidates)
                evaluate_seconds += time.perf_counter() - tick
                del candidates
                if isinstance(raw, Tensor):
                    raw = raw.detach().cpu().reshape(-1).tolist()
                raw = list(raw)
                if len(raw) != len(labels):
                    raise ValueError(f"evaluate_many returned {len(raw)} scores for {len(labels)} candidates")
                all_scores = [self._validate(value, label) for value, label in zip(raw, labels)]
            else:
                all_scores = []
                rows_to_load = ([None] if self.include_incumbent else []) + list(range(num_candidates))
                for current, index in zip(labels, rows_to_load):
                    if index is not None:
                        self._load([piece[0] for piece in self._split(rows[index : index + 1])])
                    tick = time.perf_counter()
                    try:
                        with torch.no_grad():
                            value = evaluate()
                    except Exception as error:
                        raise RuntimeError(
                            f"evaluate raised while scoring {current}; parameters and anchors were "
                            f"restored: {type(error).__name__}: {error}"
                        ) from error
                    finally:
                        evaluate_seconds += time.perf_counter() - tick
                    all_scores.append(self._validate(value, current))
        except _InvalidScore as error:
            self._load(backup)
            raise ValueError(f"{error}; parameters and anchors were restored") from None
        except BaseException as error:
            self._load(backup)
            if hasattr(error, "add_note") and not isinstance(error, Exception):
                error.add_note(
                    f"raised while ExploRLerOptimizer.explore() was scoring {current}; "
                    "the parameters were restored and the anchors kept"
                )
            if batch and isinstance(error, Exception):
                raise RuntimeError(
                    f"evaluate_many raised while scoring {len(labels)} candidates; parameters and "
                    f"anchors were restored: {type(error).__name__}: {error}"
                ) from error
            raise

        incumbent_score = all_scores[0] if self.include_incumbent else None
        scores = torch.tensor(all_scores[1:] if self.include_incumbent else all_scores, dtype=torch.float64)
        best_index = int(torch.argmax(scores))
        best_score = float(scores[best_index])
        if incumbent_score is not None:
            committed = best_score > incumbent_score
        else:
            committed = best_score > -math.inf
        distance = 0.0
        if committed:
            best = self._split(rows[best_index : best_index + 1])
            self._load([value[0] for value in best])
            distance = math.sqrt(
                sum(
                    float((p.detach().double() - b.double()).square().sum())
                    for p, b in zip(self.explore_params, backup)
                )
            )
            if self.reset_state:
                for p in self.explore_params:
                    self.optimizer.state.pop(p, None)
        else:
            self._load(backup)
        self.clear_anchors()
        self._cycles += 1
        seconds = time.perf_counter() - started
        result = ExploreResult(
            scores=scores,
            incumbent_score=incumbent_score,
            best_index=best_index,
            best_score=best_score,
            committed=committed,
            num_candidates=num_candidates,
            distance=distance,
            seconds=seconds,
            search_seconds=seconds - evaluate_seconds,
            num_anchors=num_anchors,
            anchor_coords=anchor_coords.detach().cpu(),
            candidate_coords=coords.detach().cpu(),
            incumbent_coords=incumbent_coords.detach().cpu(),
            incumbent_offset=incumbent_offset,
        )
        self.last_result = result
        return result

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The inner optimizer's state dict plus the explorer's anchors, counters and RNG state.

        Holds only tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it.
        """
        dtype_name = str(self.anchor_dtype).removeprefix("torch.")
        return {
            "optimizer": self.optimizer.state_dict(),
            "explorler": {
                "version": _STATE_VERSION,
                "num_params": self.num_params,
                "shapes": [list(shape) for shape in self._shapes],
                "anchor_dtype": dtype_name,
                "origin": None if self._origin is None else self._origin.detach().cpu().clone(),
                "deltas": None if not self._deltas else torch.stack(self._deltas).detach().cpu().clone(),
                "steps": self._steps,
                "cycles": self._cycles,
                "generator_state": self._generator.get_state(),
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore from :meth:`state_dict`; a plain inner-optimizer state dict loads the inner only."""
        if "explorler" not in state_dict:
            if "state" in state_dict and "param_groups" in state_dict:
                self.optimizer.load_state_dict(state_dict)
                return
            raise ValueError(
                "not an ExploRLerOptimizer or torch optimizer state dict: expected keys "
                f"'optimizer' and 'explorler' (or 'state' and 'param_groups'), got {sorted(state_dict)}"
            )
        explorer = state_dict["explorler"]
        shapes = [tuple(shape) for shape in explorer["shapes"]]
        if shapes != self._shapes:
            raise ValueError(
                f"the state dict was saved for explored parameters of shapes {shapes}, but this "
                f"optimizer explores {self._shapes}; build it with the same explore_params"
            )
        dtype = _DTYPES.get(explorer["anchor_dtype"])
        if dtype is None:
            raise ValueError(f"unknown anchor dtype {explorer['anchor_dtype']!r} in the state dict")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        origin, deltas = explorer["origin"], explorer["deltas"]
        self._origin = None if origin is None else origin.to(self.anchor_device, self._work_dtype)
        self.anchor_dtype = dtype
        self._deltas = [] if deltas is None else [row.to(self.anchor_device, dtype) for row in deltas]
        self._steps = int(explorer["steps"])
        self._cycles = int(explorer["cycles"])
        self._generator.set_state(explorer["generator_state"])

    def __repr__(self) -> str:
        inner = repr(self.optimizer).replace("\n", "\n    ")
        return (
            f"{type(self).__name__}(\n"
            f"  optimizer={inner},\n"
            f"  search={self.search!r},\n"
            f"  explore_params={len(self.explore_params)} tensors ({self.num_params:,} values), "
            f"max_anchors={self.max_anchors}, record_every={self.record_every}, "
            f"include_incumbent={self.include_incumbent}, reset_state={self.reset_state}, "
            f"on_invalid={self.on_invalid!r}, anchor_dtype={self.anchor_dtype}, "
            f"anchors={self.num_anchors}, cycles={self._cycles}\n)"
        )
