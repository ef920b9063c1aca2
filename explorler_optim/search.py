"""Candidate generators for :class:`~explorler_optim.ExploRLerOptimizer`.

Each operator turns anchors (checkpoints) into candidate points. All of them work in the anchors'
affine hull: :meth:`SearchOperator.search` receives the anchors' orthonormal coordinates (see
:class:`~explorler_optim.subspace.AnchorSubspace`) and returns candidate coordinates, which the
optimizer lifts back to parameter space with one matrix product. :meth:`SearchOperator.candidates`
does the whole round trip for raw ``(n, P)`` anchors. :meth:`SearchOperator.num_candidates` says
how many candidates a search over ``n`` anchors returns, and :func:`make_search` builds an operator
by name. Every default makes 10 candidates from 10 anchors.

Some operators need scores between rounds (an evolution strategy, population-based training): their
:meth:`SearchOperator.start` returns a :class:`SearchRounds` that proposes candidates round by round
(:meth:`~SearchRounds.ask`) and is told each round's scores (:meth:`~SearchRounds.tell`) before it
proposes the next. Every operator has ``start``: for a one-shot operator it gives one round, the
output of :meth:`~SearchOperator.search`, so :class:`~explorler_optim.Explorer` drives all of them the
same way. Such operators live in :mod:`explorler_optim.evolution` (subclasses of
:class:`SteeredSearch`).
"""

from __future__ import annotations

import abc
import inspect
import math
from typing import Any

import torch
from torch import Tensor

from .subspace import AnchorSubspace

__all__ = [
    "SearchOperator",
    "SearchRounds",
    "SteeredSearch",
    "EmptySpaceSearch",
    "RandomWalkSearch",
    "CheckpointAverage",
    "GaussianSearch",
    "make_search",
]

# Distances are clipped below at this value inside the force law (as in the authors' code).
_MIN_DISTANCE = 1e-3
# An agent whose net force falls below this magnitude stops for good.
_MIN_FORCE = 1e-7


class SearchRounds(abc.ABC):
    """One search, round by round: :meth:`ask` for candidates, :meth:`tell` their scores, repeat.

    The driver (:class:`~explorler_optim.Explorer`) calls ``ask()``, scores the points it returns,
    calls ``tell(scores)`` and asks again, until ``ask()`` returns ``None``. Every round's candidates
    are scored exactly once, and the selection rule then picks among all of them.

    Example:
        >>> rounds = GaussianSearch(num_candidates=3).start(torch.randn(4, 3), torch.Generator())
        >>> first = rounds.ask(); rounds.tell(torch.zeros(3, dtype=torch.float64))
        >>> first.shape, rounds.ask()
        (torch.Size([3, 3]), None)
    """

    @abc.abstractmethod
    def ask(self) -> Tensor | None:
        """The next round's ``(m, r)`` candidate coordinates, or ``None`` when the search is done."""

    @abc.abstractmethod
    def tell(self, scores: Tensor) -> None:
        """The ``(m,)`` float64 scores of the points the last :meth:`ask` returned (``-inf``: skipped)."""


class _OneRound(SearchRounds):
    """A one-shot operator's search: one round, its points fixed in advance."""

    def __init__(self, coords: Tensor) -> None:
        self._coords: Tensor | None = coords

    def ask(self) -> Tensor | None:
        coords, self._coords = self._coords, None
        return coords

    def tell(self, scores: Tensor) -> None:
        pass  # its points do not depend on scores


class SearchOperator(abc.ABC):
    """Base class: maps anchor coordinates ``(n, r)`` to candidate coordinates ``(m, r)``."""

    @abc.abstractmethod
    def search(self, coords: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return ``(m, r)`` candidate coordinates for ``(n, r)`` float64 anchor coordinates."""

    def start(self, coords: Tensor, generator: torch.Generator | None = None) -> SearchRounds:
        """The search over ``(n, r)`` anchor coordinates as rounds (here one: :meth:`search`'s points).

        Operators that need scores between rounds override it (see :class:`SteeredSearch`).
        """
        return _OneRound(self.search(coords, generator))

    def num_rounds(self) -> int:
        """How many rounds of candidates :meth:`start` proposes (1 for a one-shot operator)."""
        return 1

    def candidates(self, anchors: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return ``(m, P)`` candidates for raw ``(n, P)`` anchors, in the anchors' dtype.

        Args:
            anchors: ``(n, P)`` tensor of anchors, one flattened parameter vector per row.
            generator: random source for stochastic operators.
        """
        _check_anchor_count(anchors.shape[0])
        subspace = AnchorSubspace(anchors)
        coords = self.search(subspace.coords, generator)
        return subspace.lift(coords, dtype=anchors.dtype)

    def num_candidates(self, num_anchors: int) -> int:
        """How many candidates a search over ``num_anchors`` anchors returns.

        The built-in operators answer by formula; this default runs the search once on
        ``num_anchors`` random anchors, so an operator whose count depends on the anchors' values
        should override it.

        Args:
            num_anchors: the number of anchors searched (at least 2).

        Returns:
            The number of candidates.

        Example:
            >>> CheckpointAverage().num_candidates(10)
            1
        """
        coords = torch.randn(num_anchors, num_anchors - 1, generator=torch.Generator().manual_seed(0))
        return int(self.search(coords, torch.Generator().manual_seed(0)).shape[0])

    def extra_repr(self) -> str:
        """The settings ``repr`` shows inside the parentheses (override to add them)."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _check_anchor_count(n: int) -> None:
    if n < 2:
        raise ValueError(f"a search needs at least 2 anchors, got {n}")


class SteeredSearch(SearchOperator):
    """Base class of operators whose later rounds depend on the scores of earlier ones.

    Subclasses implement :meth:`start` (returning their :class:`SearchRounds`), :meth:`num_rounds`
    and :meth:`num_candidates` (the total over all rounds, which the scripts' budget rule bounds).
    They have no one-shot :meth:`search`: candidates they propose without scores would not be the
    search they describe, so ``search`` and ``candidates`` raise; an :class:`~explorler_optim.Explorer`
    drives the rounds.
    """

    @abc.abstractmethod
    def start(self, coords: Tensor, generator: torch.Generator | None = None) -> SearchRounds:
        """The search over ``(n, r)`` anchor coordinates, round by round."""

    @abc.abstractmethod
    def num_candidates(self, num_anchors: int) -> int:
        """How many candidates all rounds together propose from ``num_anchors`` anchors."""

    def search(self, coords: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Raises ``TypeError``: the candidates of a steered search depend on scores (use :meth:`start`)."""
        raise TypeError(
            f"{self!r} proposes candidates in rounds steered by their scores, so it has no one-shot "
            "search(): give it to an Explorer (or ExploRLerOptimizer), or drive start(coords).ask() / "
            ".tell(scores) yourself"
        )


def _pairwise_distances(points: Tensor, anchors: Tensor) -> Tensor:
    # Explicit differences rather than torch.cdist, whose matmul shortcut loses precision.
    return (points[:, None, :] - anchors[None, :, :]).pow(2).sum(-1).sqrt()


def _start_points(coords: Tensor, agents: int, neighbors: int) -> Tensor:
    """For anchors 0, 2, 4, ... (then 1, 3, ... if more agents are asked for than that gives), the
    mean of their ``neighbors - 1`` nearest other anchors."""
    n = coords.shape[0]
    distances = _pairwise_distances(coords, coords)
    distances.fill_diagonal_(math.inf)
    k = min(neighbors - 1, n - 1)
    nearest = distances.topk(k, dim=1, largest=False).indices
    order = list(range(0, n, 2)) + list(range(1, n, 2))
    chosen = order[: min(agents, n)]
    return torch.stack([coords[nearest[i]].mean(0) for i in chosen])


def _snapshot_steps(steps: int, snapshot_every: int) -> list[int]:
    return list(range(0, steps, snapshot_every))


class EmptySpaceSearch(SearchOperator):
    r"""The Empty-Space Search (ESA) of ExploRLer, as the authors run it.

    Agents start between anchors and move under a Lennard-Jones force from their nearest anchors,
    repelled when closer than :math:`2^{1/6}\sigma` and attracted beyond, so they settle in the middle
    of the empty regions among the anchors. Each agent contributes its position at steps
    ``0, snapshot_every, 2 * snapshot_every, ...`` (before that step's move) and its final position.

    With the defaults and 10 anchors this gives 5 agents x 2 snapshots = 10 candidates (the setting
    the benchmarks tuned), ordered agent by agent; ``snapshot_every=20`` gives 5 x 4 = 20, exactly
    the authors' operator. With fewer anchors it uses what it has (from 2).

    Args:
        agents: number of search agents; starts are taken at anchors 0, 2, 4, ... (then 1, 3, ...).
        steps: moves per agent.
        step_size: length of each move, in parameter units.
        momentum: weight ``gamma`` of the running direction and force magnitude.
        epsilon: depth of the Lennard-Jones potential.
        neighbors: anchors that act on an agent (its nearest ones); starts average ``neighbors - 1``.
        snapshot_every: a snapshot every this many steps, plus the final position (20: the paper's).

    Example:
        >>> EmptySpaceSearch().candidates(torch.randn(10, 4610)).shape
        torch.Size([10, 4610])
        >>> EmptySpaceSearch(snapshot_every=20).num_candidates(10)  # the authors' operator
        20
    """

    def __init__(
        self,
        agents: int = 5,
        steps: int = 60,
        step_size: float = 1e-3,
        momentum: float = 0.3,
        epsilon: float = 0.5,
        neighbors: int = 6,
        snapshot_every: int = 60,
    ) -> None:
        for name, value in [("agents", agents), ("neighbors", neighbors), ("snapshot_every", snapshot_every)]:
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        if neighbors < 2:
            raise ValueError(f"neighbors must be at least 2, got {neighbors!r}")
        self.agents = int(agents)
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.neighbors = int(neighbors)
        self.snapshot_every = int(snapshot_every)

    def num_candidates(self, num_anchors: int) -> int:
        """How many candidates a search over ``num_anchors`` anchors returns (agents x snapshots)."""
        return min(self.agents, num_anchors) * (len(_snapshot_steps(self.steps, self.snapshot_every)) + 1)

    def search(self, coords: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_anchor_count(coords.shape[0])
        coords = coords.to(torch.float64)
        position = _start_points(coords, self.agents, self.neighbors)
        num_agents, dim = position.shape
        k = min(self.neighbors, coords.shape[0])
        magnitude_memory = position.new_zeros(num_agents)
        direction_memory = position.new_zeros(num_agents, dim)
        active = torch.ones(num_agents, dtype=torch.bool, device=coords.device)
        snapshot_at = set(_snapshot_steps(self.steps, self.snapshot_every))
        snapshots = []
        for step in range(self.steps):
            if step in snapshot_at:
                snapshots.append(position.clone())
            distances, nearest = _pairwise_distances(position, coords).topk(k, dim=1, largest=False)
            sigma = distances.mean(1, keepdim=True)
            clipped = distances.clamp_min(_MIN_DISTANCE)
            ratio = sigma / clipped
            strength = 6.0 * self.epsilon / sigma * (2.0 * ratio.pow(13) - ratio.pow(7))
            offsets = position[:, None, :] - coords[nearest]
            force = ((strength / clipped)[..., None] * offsets).sum(1)
            magnitude = force.norm(dim=1)
            active &= (magnitude >= _MIN_FORCE) & (sigma.squeeze(1) > 0)
            if not bool(active.any()):
                continue
            safe_magnitude = torch.where(active, magnitude, torch.ones_like(magnitude))
            unit = force / safe_magnitude[:, None]
            total = magnitude_memory + safe_magnitude
            move = unit * (safe_magnitude / total)[:, None]
            move = move + direction_memory * (magnitude_memory / total)[:, None]
            blended = self.momentum * direction_memory + move
            blended_norm = blended.norm(dim=1, keepdim=True).clamp_min(torch.finfo(blended.dtype).tiny)
            mask = active[:, None]
            position = torch.where(mask, position + self.step_size * move, position)
            magnitude_memory = torch.where(
                active, self.momentum * magnitude_memory + safe_magnitude, magnitude_memory
            )
            direction_memory = torch.where(mask, blended / blended_norm, direction_memory)
        snapshots.append(position)
        return torch.stack(snapshots, dim=1).reshape(num_agents * len(snapshots), dim)

    def extra_repr(self) -> str:
        return (
            f"agents={self.agents}, steps={self.steps}, step_size={self.step_size:g}, "
            f"momentum={self.momentum:g}, epsilon={self.epsilon:g}, neighbors={self.neighbors}, "
            f"snapshot_every={self.snapshot_every}"
        )


class RandomWalkSearch(SearchOperator):
    """The paper's random-walk comparison: ESA's starts and snapshot schedule, random directions.

    Each step moves ``step_size`` along a direction drawn uniformly from the unit sphere of the
    anchors' affine hull (the same space ESA explores), so the two operators differ only in how the
    direction is chosen.

    Args:
        agents: as in :class:`EmptySpaceSearch`.
        steps: as in :class:`EmptySpaceSearch`.
        step_size: as in :class:`EmptySpaceSearch`.
        neighbors: as in :class:`EmptySpaceSearch`.
        snapshot_every: as in :class:`EmptySpaceSearch`.

    Example:
        >>> RandomWalkSearch().candidates(torch.randn(10, 100), torch.Generator().manual_seed(0)).shape
        torch.Size([10, 100])
    """

    def __init__(
        self,
        agents: int = 5,
        steps: int = 60,
        step_size: float = 1e-3,
        neighbors: int = 6,
        snapshot_every: int = 60,
    ) -> None:
        # Reuse ESA's validation of the shared settings.
        EmptySpaceSearch(agents, steps, step_size, 0.0, 0.5, neighbors, snapshot_every)
        self.agents, self.steps, self.step_size = int(agents), int(steps), float(step_size)
        self.neighbors, self.snapshot_every = int(neighbors), int(snapshot_every)

    num_candidates = EmptySpaceSearch.num_candidates

    def search(self, coords: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_anchor_count(coords.shape[0])
        coords = coords.to(torch.float64)
        position = _start_points(coords, self.agents, self.neighbors)
        num_agents, dim = position.shape
        snapshot_at = set(_snapshot_steps(self.steps, self.snapshot_every))
        snapshots = []
        for step in range(self.steps):
            if step in snapshot_at:
                snapshots.append(position.clone())
            if dim == 0:
                continue
            direction = torch.randn(num_agents, dim, generator=generator, dtype=torch.float64)
            direction = direction.to(coords.device)
            position = position + self.step_size * direction / direction.norm(dim=1, keepdim=True)
        snapshots.append(position)
        return torch.stack(snapshots, dim=1).reshape(num_agents * len(snapshots), dim)

    def extra_repr(self) -> str:
        return (
            f"agents={self.agents}, steps={self.steps}, step_size={self.step_size:g}, "
            f"neighbors={self.neighbors}, snapshot_every={self.snapshot_every}"
        )


class CheckpointAverage(SearchOperator):
    """One candidate: the mean of the anchors (like stochastic weight averaging over one cycle).

    Example:
        >>> CheckpointAverage().candidates(torch.tensor([[0.0, 0.0], [2.0, 4.0]]))
        tensor([[1., 2.]])
    """

    def num_candidates(self, num_anchors: int) -> int:
        """One candidate, whatever the number of anchors."""
        return 1

    def search(self, coords: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_anchor_count(coords.shape[0])
        return coords.to(torch.float64).mean(0, keepdim=True)


class GaussianSearch(SearchOperator):
    """Samples from a Gaussian fitted to the anchors (their mean and full covariance).

    The anchors' covariance has rank at most ``n - 1`` and lives in their span, so sampling in
    subspace coordinates draws from exactly that Gaussian at any network size.

    Args:
        num_candidates: number of samples (10: as many as the default ESA makes from 10 anchors).
        scale: multiplies the standard deviation (1.0: the fitted Gaussian).

    Example:
        >>> search = GaussianSearch(num_candidates=8)
        >>> search.num_candidates(10)
        8
        >>> search.candidates(torch.randn(10, 50), torch.Generator().manual_seed(0)).shape
        torch.Size([8, 50])
    """

    def __init__(self, num_candidates: int = 10, scale: float = 1.0) -> None:
        if int(num_candidates) != num_candidates or num_candidates < 1:
            raise ValueError(f"num_candidates must be a positive integer, got {num_candidates!r}")
        if not scale >= 0:
            raise ValueError(f"scale must be non-negative, got {scale!r}")
        self.samples, self.scale = int(num_candidates), float(scale)

    def num_candidates(self, num_anchors: int) -> int:
        """``num_candidates`` samples, whatever the number of anchors."""
        return self.samples

    def search(self, coords: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_anchor_count(coords.shape[0])
        coords = coords.to(torch.float64)
        mean = coords.mean(0)
        centred = coords - mean
        # noise @ centred has covariance centred^T centred: the anchors' sample covariance times n-1.
        noise = torch.randn(self.samples, coords.shape[0], generator=generator, dtype=torch.float64)
        noise = noise.to(coords.device)
        spread = self.scale / math.sqrt(coords.shape[0] - 1)
        return mean + spread * noise @ centred

    def extra_repr(self) -> str:
        return f"num_candidates={self.samples}, scale={self.scale:g}"


_SEARCHES: dict[str, type[SearchOperator]] = {
    "esa": EmptySpaceSearch,
    "random-walk": RandomWalkSearch,
    "checkpoint-average": CheckpointAverage,
    "gaussian": GaussianSearch,
}


def make_search(name: str | SearchOperator = "esa", **options: Any) -> SearchOperator:
    """The candidate generator called ``name``, built with ``options``: the one place a name
    becomes an operator (the scripts' ``--search``, the SB3 callback's ``search``).

    Args:
        name: ``"esa"`` (:class:`EmptySpaceSearch`, the default), ``"random-walk"``,
            ``"checkpoint-average"``, ``"gaussian"``, ``"pbt"``
            (:class:`~explorler_optim.evolution.PopulationSearch`) or ``"cma-es"``
            (:class:`~explorler_optim.evolution.CMAESSearch`, needs ``pip install 'explorler-optim[es]'``);
            or an operator already built, returned as is.
        **options: the operator's constructor arguments (e.g. ``agents=5, snapshot_every=20``).

    Returns:
        The operator. With no options, every one-shot operator makes 10 candidates (or 1, the
        average) from 10 anchors; ``"cma-es"`` makes 10 in 2 rounds, ``"pbt"`` scores the 10 anchors
        and 5 children.

    Raises:
        ValueError: an unknown name, an option the operator does not take (both name the
            choices), or options given with an operator already built.

    Example:
        >>> make_search().num_candidates(10)
        10
        >>> make_search("gaussian", num_candidates=4).num_candidates(10)
        4
        >>> make_search(GaussianSearch(num_candidates=3)).num_candidates(10)
        3
    """
    built: SearchOperator = build_named("make_search", "search", _searches(), name, options, SearchOperator)
    return built


def _searches() -> dict[str, type[SearchOperator]]:
    from .evolution import CMAESSearch, PopulationSearch  # evolution imports this module

    return {**_SEARCHES, "pbt": PopulationSearch, "cma-es": CMAESSearch}


def build_named(
    caller: str, kind: str, registry: dict[str, Any], name: Any, options: dict[str, Any], base: type
) -> Any:
    """``name`` itself if it is a ``base`` instance, else ``registry[name](**options)``; a
    ``ValueError`` names the choices (``make_search`` and ``make_selection`` share it)."""
    if isinstance(name, base):
        if options:
            raise ValueError(
                f"{kind}_kwargs applies to a {kind} given by name; configure the instance instead"
            )
        return name
    if not isinstance(name, str):
        raise ValueError(f"{kind} must be a {kind}'s name or a {base.__name__}, got {name!r}")
    if name not in registry:
        raise ValueError(f"{caller}: unknown {kind} {name!r}; choose one of {sorted(registry)}")
    try:
        return registry[name](**options)
    except TypeError as error:
        params = list(inspect.signature(registry[name]).parameters)
        raise ValueError(f"{caller}({name!r}): {error}; its options are {params}") from None
