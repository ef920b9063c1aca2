"""ExploRLer for PyTorch: search the empty space between an on-policy run's checkpoints.

Wrap the optimizer you already have with :class:`ExploRLerOptimizer`, call ``record()`` where an
anchor belongs and ``explore(evaluate)`` where a search belongs. See the README for a full example.
"""

from .explorer import BatchEvaluator, Explorer, ExploreResult
from .optimizer import ExploRLerOptimizer
from .search import (
    CheckpointAverage,
    EmptySpaceSearch,
    GaussianSearch,
    RandomWalkSearch,
    SearchOperator,
)
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
    "__version__",
]
