"""ExploRLer for PyTorch: search the empty space between an on-policy run's checkpoints.

Wrap the optimizer you already have with :class:`ExploRLerOptimizer`, call ``record()`` where an
anchor belongs and ``explore(evaluate)`` where a search belongs; ``evaluate`` returns a score to
maximise (e.g. a mean return). See the README for a full example.

Modules:

- ``explorler_optim.optimizer``: :class:`ExploRLerOptimizer`, :class:`ExploreResult`.
- ``explorler_optim.search``: the candidate generators (:class:`EmptySpaceSearch`, ...).
- ``explorler_optim.evolution``: generators that use scores between rounds (``pbt``, ``cma-es``).
- ``explorler_optim.selection``: which scored candidate is kept (``argmax``, ``tournament``,
  ``success-first``).
- ``explorler_optim.subspace``: :class:`AnchorSubspace`, the anchors' own coordinates.
- ``explorler_optim.rl``: scoring policies in gymnasium environments: ``PolicyEvaluator`` (all
  candidates' episodes in one batched loop, worker processes or Ray, racing) and ``ObsNormalizer``
  (frozen observation statistics). Needs gymnasium (the ``scripts`` extra).
- ``explorler_optim.viz``: the landscape view of a search (``landscape_figure``,
  ``figure_from_result``, ``log_landscape`` for TensorBoard). Needs matplotlib
  (the ``viz`` extra).
- ``explorler_optim.landscape``: ``python -m explorler_optim.landscape CHECKPOINT`` scores a dense
  grid around a saved policy and writes a PNG.
- ``explorler_optim.extras``: ``install_hint``, the command that
  installs an extra (``pip install -e ".[sb3]"`` in a clone, ``pip install "explorler-optim[sb3]"``
  from a package index), which every error message about a missing dependency gives.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:  # the names below import lazily (PEP 562): `import explorler_optim` loads no torch
    from .explorer import BatchEvaluator, Explorer, ExploreResult
    from .optimizer import ExploRLerOptimizer
    from .search import (
        CheckpointAverage,
        EmptySpaceSearch,
        GaussianSearch,
        RandomWalkSearch,
        SearchOperator,
        SearchRounds,
        SteeredSearch,
        make_search,
    )
    from .selection import SelectionRule, make_selection
    from .subspace import AnchorSubspace

__version__ = "0.1.0"

__all__ = [
    "AnchorSubspace",
    "BatchEvaluator",
    "CheckpointAverage",
    "EmptySpaceSearch",
    "Explorer",
    "ExploRLerOptimizer",
    "ExploreResult",
    "GaussianSearch",
    "RandomWalkSearch",
    "SearchOperator",
    "SearchRounds",
    "SelectionRule",
    "SteeredSearch",
    "__version__",
    "make_search",
    "make_selection",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AnchorSubspace": "subspace",
        "BatchEvaluator": "explorer",
        "CheckpointAverage": "search",
        "EmptySpaceSearch": "search",
        "Explorer": "explorer",
        "ExploRLerOptimizer": "optimizer",
        "ExploreResult": "explorer",
        "GaussianSearch": "search",
        "RandomWalkSearch": "search",
        "SearchOperator": "search",
        "SearchRounds": "search",
        "SelectionRule": "selection",
        "SteeredSearch": "search",
        "make_search": "search",
        "make_selection": "selection",
    },
)
