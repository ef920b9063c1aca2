"""Evolutionary candidate generators: operators that use scores between rounds.

Both work in the anchors' affine hull, like every operator of :mod:`explorler_optim.search`, and
both are :class:`~explorler_optim.search.SteeredSearch` operators: an
:class:`~explorler_optim.Explorer` scores each round before asking for the next.

* :class:`PopulationSearch` (``"pbt"``): the authors' population-based-training baseline. The
  anchors are the population; they are scored, the best half is kept and the rest is refilled with
  children of random elite parents plus Gaussian noise scaled to the anchors' spread.
* :class:`CMAESSearch` (``"cma-es"``): CMA-ES (the ``cma`` package) in the anchors' subspace,
  starting at the anchors' mean with a step size equal to their spread, spending its candidate
  budget in a few rounds, each round's scores steering the next.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .search import SearchRounds, SteeredSearch, _check_anchor_count

__all__ = ["CMAESSearch", "PopulationSearch", "anchor_spread"]


def anchor_spread(coords: Tensor) -> float:
    """The anchors' standard deviation per coordinate of their subspace (0.0 when they coincide).

    The root mean square distance of the anchors from their mean, divided by the square root of the
    subspace's rank: a Gaussian step of this size per coordinate is as wide as the anchors' cloud.

    Example:
        >>> anchor_spread(torch.tensor([[-1.0], [1.0]], dtype=torch.float64))
        1.4142135623730951
        >>> anchor_spread(torch.zeros(3, 0, dtype=torch.float64))
        0.0
    """
    n, rank = coords.shape
    if rank == 0 or n < 2:
        return 0.0
    centred = coords - coords.mean(0)
    return math.sqrt(float(centred.square().sum()) / ((n - 1) * rank))


def _ranked(scores: Tensor) -> Tensor:
    """Indices from the best score to the worst; ties keep their order (NaN counts as -inf)."""
    clean = torch.nan_to_num(scores.to(torch.float64), nan=-math.inf)
    return torch.sort(clean, descending=True, stable=True).indices


class PopulationSearch(SteeredSearch):
    """Population-based training over the anchors, as the ExploRLer authors' PBT baseline runs it.

    Round 1 scores the anchors themselves (the population). Round 2 keeps the best ``keep`` of them
    (``n // 2``, at least 1) and refills the other ``n - keep`` slots: each child is an elite parent
    drawn uniformly with replacement plus Gaussian noise in the anchors' subspace, of standard
    deviation ``noise_scale`` times the anchors' spread per coordinate
    (:func:`~explorler_optim.evolution.anchor_spread`). The authors' children used a fixed standard
    deviation of 0.02 on every parameter, 35-100x the size of ESA's moves; scaling it to the
    anchors keeps children in the region the anchors explored. The elites are not scored
    again (the authors' code re-scored them); the selection rule then picks among all ``n + (n -
    keep)`` scored points, and the incumbent rule applies as for any operator.

    Args:
        noise_scale: the children's noise, in units of the anchors' spread per coordinate.
        keep_fraction: the share of the population kept as elites (0.5: the best half).

    Example:
        >>> search = PopulationSearch()
        >>> search.num_candidates(10), search.num_rounds()  # 10 anchors + 5 children, in 2 rounds
        (15, 2)
        >>> rounds = search.start(torch.randn(10, 9, dtype=torch.float64), torch.Generator().manual_seed(0))
        >>> population = rounds.ask(); rounds.tell(torch.arange(10, dtype=torch.float64))
        >>> children = rounds.ask(); children.shape, rounds.ask()
        (torch.Size([5, 9]), None)
    """

    def __init__(self, noise_scale: float = 0.5, keep_fraction: float = 0.5) -> None:
        if not (isinstance(noise_scale, (int, float)) and noise_scale >= 0):
            raise ValueError(f"PopulationSearch: noise_scale must be a number >= 0, got {noise_scale!r}")
        if not (isinstance(keep_fraction, (int, float)) and 0 < keep_fraction < 1):
            raise ValueError(f"PopulationSearch: keep_fraction must be in (0, 1), got {keep_fraction!r}")
        self.noise_scale = float(noise_scale)
        self.keep_fraction = float(keep_fraction)

    def num_kept(self, num_anchors: int) -> int:
        """Elites kept from a population of ``num_anchors`` (at least 1, at most all but one)."""
        return min(num_anchors - 1, max(1, int(num_anchors * self.keep_fraction)))

    def num_candidates(self, num_anchors: int) -> int:
        """The anchors, then one child per slot not kept."""
        return num_anchors + num_anchors - self.num_kept(num_anchors)

    def num_rounds(self) -> int:
        """The population, then the children."""
        return 2

    def start(self, coords: Tensor, generator: torch.Generator | None = None) -> SearchRounds:
        _check_anchor_count(coords.shape[0])
        return _PopulationRounds(self, coords.to(torch.float64), generator)

    def extra_repr(self) -> str:
        return f"noise_scale={self.noise_scale:g}, keep_fraction={self.keep_fraction:g}"


class _PopulationRounds(SearchRounds):
    def __init__(self, search: PopulationSearch, coords: Tensor, generator: torch.Generator | None) -> None:
        self.search, self.coords, self.generator = search, coords, generator
        self.round = 0
        self.scores: Tensor | None = None

    def ask(self) -> Tensor | None:
        self.round += 1
        if self.round == 1:
            return self.coords.clone()
        if self.round > 2:
            return None
        if self.scores is None:
            raise RuntimeError("PopulationSearch: tell() the population's scores before asking for children")
        n, rank = self.coords.shape
        kept = self.search.num_kept(n)
        elites = _ranked(self.scores)[:kept]
        parents = elites[torch.randint(kept, (n - kept,), generator=self.generator)]
        noise = torch.randn(n - kept, rank, generator=self.generator, dtype=torch.float64)
        sigma = self.search.noise_scale * anchor_spread(self.coords)
        return self.coords[parents] + sigma * noise.to(self.coords.device)

    def tell(self, scores: Tensor) -> None:
        if self.round == 1:
            self.scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).cpu()


def _require_cma() -> Any:
    try:
        import cma
    except ImportError:
        from explorler_optim.extras import install_hint

        raise ImportError(f"the cma-es search needs the cma package: {install_hint('es')}") from None
    return cma


class CMAESSearch(SteeredSearch):
    """CMA-ES in the anchors' subspace (the ``cma`` package), ``rounds`` rounds of ``popsize``.

    The search starts at the anchors' mean with step size ``sigma_scale`` times the anchors' spread
    (:func:`~explorler_optim.evolution.anchor_spread`) and an isotropic covariance; each round's
    scores (maximised) update the mean, step size and covariance before the next round is sampled,
    so ``popsize * rounds`` candidates are spent where the earlier ones scored well. The default
    spends ESA's budget (10 candidates) in 2 rounds of 5. Its random draws come from the explorer's
    generator, never from numpy's global random state. Anchors that coincide (a converged policy)
    leave no subspace to search: every candidate is then their common point.

    Args:
        popsize: candidates per round (at least 2).
        rounds: rounds of candidates (1: no steering, a Gaussian sample around the mean).
        sigma_scale: the first round's step size, in units of the anchors' spread per coordinate.

    Example:
        >>> search = CMAESSearch(popsize=4, rounds=3)
        >>> search.num_candidates(10), search.num_rounds()
        (12, 3)
    """

    def __init__(self, popsize: int = 5, rounds: int = 2, sigma_scale: float = 1.0) -> None:
        for name, value, least in (("popsize", popsize, 2), ("rounds", rounds, 1)):
            if isinstance(value, bool) or int(value) != value or value < least:
                raise ValueError(f"CMAESSearch: {name} must be an integer >= {least}, got {value!r}")
        if not (isinstance(sigma_scale, (int, float)) and sigma_scale > 0):
            raise ValueError(f"CMAESSearch: sigma_scale must be a number > 0, got {sigma_scale!r}")
        _require_cma()  # fail when the search is built, not at the first explore()
        self.popsize, self.rounds, self.sigma_scale = int(popsize), int(rounds), float(sigma_scale)

    def num_candidates(self, num_anchors: int) -> int:
        """``popsize * rounds``, whatever the number of anchors."""
        return self.popsize * self.rounds

    def num_rounds(self) -> int:
        """``rounds``."""
        return self.rounds

    def start(self, coords: Tensor, generator: torch.Generator | None = None) -> SearchRounds:
        _check_anchor_count(coords.shape[0])
        return _CMARounds(self, coords.to(torch.float64), generator)

    def extra_repr(self) -> str:
        return f"popsize={self.popsize}, rounds={self.rounds}, sigma_scale={self.sigma_scale:g}"


class _CMARounds(SearchRounds):
    def __init__(self, search: CMAESSearch, coords: Tensor, generator: torch.Generator | None) -> None:
        self.search, self.device = search, coords.device
        self.mean = coords.mean(0)
        self.rank = coords.shape[1]
        self.round = 0
        self.asked: list[np.ndarray] = []
        sigma = anchor_spread(coords) * search.sigma_scale
        self.strategy: Any = None
        if self.rank == 0 or not sigma > 0:
            return  # coinciding anchors: nothing to search
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        options = {
            "popsize": search.popsize,
            "seed": math.nan,  # leave numpy's global random state alone ...
            "randn": lambda *shape: rng.standard_normal(shape),  # ... and draw from the explorer's seed
            "verbose": -9,
            "CMA_mirrors": 0,  # every candidate an independent draw
        }
        # pycma searches at least 2 dimensions: a 1-D hull gets a dummy coordinate, dropped on return
        dims = max(self.rank, 2)
        self.strategy = _require_cma().CMAEvolutionStrategy(np.zeros(dims), sigma, options)

    def ask(self) -> Tensor | None:
        if self.round >= self.search.rounds:
            return None
        self.round += 1
        if self.strategy is None:
            return self.mean.expand(self.search.popsize, self.rank).clone()
        self.asked = self.strategy.ask()
        offsets = torch.as_tensor(np.stack(self.asked)[:, : self.rank], dtype=torch.float64)
        return self.mean + offsets.to(self.device)

    def tell(self, scores: Tensor) -> None:
        if self.strategy is None or self.round == self.search.rounds:
            return  # nothing to steer after the last round
        values = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).cpu().numpy()
        finite = np.isfinite(values)
        # cma minimises; a skipped (-inf) candidate ranks below every scored one
        worst = float(np.min(values[finite])) - 1.0 if finite.any() else 0.0
        losses = -np.where(finite, values, worst)
        self.strategy.tell(self.asked, losses.tolist())
