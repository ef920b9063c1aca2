"""The landscape view: a cycle's anchors, candidates and scores on the anchors' principal plane.

Everything here works in the anchors' low-dimensional subspace coordinates (see
:class:`~explorler_optim.subspace.AnchorSubspace`), which :meth:`ExploRLerOptimizer.explore` keeps in
its :class:`~explorler_optim.ExploreResult`, so drawing a view never touches the full parameter vector
and never re-evaluates a policy. matplotlib is needed (``pip install explorler-optim[viz]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .optimizer import ExploreResult

__all__ = [
    "principal_plane",
    "landscape_figure",
    "figure_from_result",
    "log_landscape",
    "save_figure",
    "require_matplotlib",
]


def require_matplotlib():
    """Return ``matplotlib.pyplot`` (Agg backend), or raise an ImportError that names the install.

    Call it before long work whose end needs a figure, so a missing matplotlib is reported at once.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the landscape view needs matplotlib: pip install 'explorler-optim[viz]'"
        ) from error
    return plt


def principal_plane(anchor_coords: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D principal plane of the anchors.

    Args:
        anchor_coords: ``(n, r)`` anchor coordinates.

    Returns:
        ``(center, basis)``: the anchors' mean ``(r,)`` and an ``(r, 2)`` orthonormal basis of the two
        directions of largest spread (padded with zero columns when ``r < 2``). A point ``x`` maps to
        ``(x - center) @ basis``.

    Example:
        >>> center, basis = principal_plane(np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        >>> basis.shape
        (3, 2)
    """
    coords = np.asarray(anchor_coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[0] < 1:
        raise ValueError(f"anchor_coords must be (n, r) with n >= 1, got shape {coords.shape}")
    center = coords.mean(axis=0)
    basis = np.zeros((coords.shape[1], 2))
    if coords.shape[1] > 0 and coords.shape[0] > 1:
        _, _, vt = np.linalg.svd(coords - center, full_matrices=False)
        keep = min(2, vt.shape[0])
        basis[:, :keep] = vt[:keep].T
        # A fixed sign convention, so successive views do not flip at random.
        for column in range(keep):
            index = np.argmax(np.abs(basis[:, column]))
            if basis[index, column] < 0:
                basis[:, column] *= -1
    return center, basis


def landscape_figure(
    anchor_coords: Tensor | np.ndarray,
    candidate_coords: Tensor | np.ndarray,
    scores: Tensor | np.ndarray,
    *,
    incumbent_coords: Tensor | np.ndarray | None = None,
    incumbent_score: float | None = None,
    committed_index: int | None = None,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    title: str | None = None,
    candidate_label: str = "candidates",
    incumbent_label: str = "incumbent",
) -> Figure:
    """Draw one cycle on the anchors' principal plane.

    Anchors are numbered in recording order and joined as a path; candidates are coloured by score;
    a filled contour interpolates the scores over the plane; the incumbent (square) and the
    committed point (star) are marked; a colour bar gives the scale.

    Args:
        anchor_coords: ``(n, r)`` anchor coordinates.
        candidate_coords: ``(m, r)`` candidate coordinates in the same subspace.
        scores: ``(m,)`` candidate scores (non-finite ones are drawn grey and left out of the contour).
        incumbent_coords: ``(r,)`` coordinates of the parameters before the search.
        incumbent_score: its score, if it was scored.
        committed_index: index of the committed candidate, or ``None`` if nothing was committed.
        grid: optional ``(xs, ys, values)`` of a dense grid already in plane coordinates
            (``values[i, j]`` at ``(xs[j], ys[i])``), drawn as the contour instead of interpolating.
        title: figure title.
        candidate_label: legend label of the scored points.
        incumbent_label: legend label of the incumbent.

    Returns:
        A matplotlib ``Figure``.
    """
    plt = require_matplotlib()
    from matplotlib.tri import Triangulation

    anchors = np.asarray(anchor_coords, dtype=np.float64)
    candidates = np.asarray(candidate_coords, dtype=np.float64).reshape(-1, anchors.shape[1])
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.shape[0] != candidates.shape[0]:
        raise ValueError(f"{candidates.shape[0]} candidates but {values.shape[0]} scores")
    center, basis = principal_plane(anchors)
    anchors_2d = (anchors - center) @ basis
    candidates_2d = (candidates - center) @ basis
    finite = np.isfinite(values)

    figure, axes = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    colour_source = None
    all_values = values[finite]
    if incumbent_score is not None and np.isfinite(incumbent_score):
        all_values = np.append(all_values, incumbent_score)
    if grid is not None:
        xs, ys, grid_values = (np.asarray(g, dtype=np.float64) for g in grid)
        all_values = np.concatenate([all_values, grid_values[np.isfinite(grid_values)].ravel()])
    vmin, vmax = (float(all_values.min()), float(all_values.max())) if all_values.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0
    levels = np.linspace(vmin, vmax, 16)
    if grid is not None:
        colour_source = axes.contourf(xs, ys, grid_values, levels=levels, cmap="viridis", alpha=0.85)
    elif finite.sum() >= 3:
        try:
            points = candidates_2d[finite]
            triangulation = Triangulation(points[:, 0], points[:, 1])
            colour_source = axes.tricontourf(
                triangulation, values[finite], levels=levels, cmap="viridis", alpha=0.6
            )
        except (ValueError, RuntimeError):  # collinear or duplicate points: no contour
            colour_source = None
    scatter = axes.scatter(
        candidates_2d[finite, 0],
        candidates_2d[finite, 1],
        c=values[finite],
        cmap="viridis",
        vmin=vmin,
        vmax=vmax,
        s=36,
        edgecolors="black",
        linewidths=0.5,
        label=candidate_label,
        zorder=3,
    )
    if (~finite).any():
        axes.scatter(*candidates_2d[~finite].T, c="lightgrey", s=30, marker="x", label="invalid", zorder=3)
    axes.plot(anchors_2d[:, 0], anchors_2d[:, 1], "-", color="white", linewidth=2.5, zorder=4)
    axes.plot(
        anchors_2d[:, 0], anchors_2d[:, 1], "o-", color="crimson", markersize=5, label="anchors", zorder=5
    )
    for number, (x, y) in enumerate(anchors_2d):
        axes.annotate(str(number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, zorder=6)
    if incumbent_coords is not None:
        incumbent_2d = (np.asarray(incumbent_coords, dtype=np.float64) - center) @ basis
        label = incumbent_label if incumbent_score is None else f"{incumbent_label} ({incumbent_score:.4g})"
        axes.scatter(
            *incumbent_2d,
            marker="s",
            s=90,
            facecolors="none",
            edgecolors="black",
            linewidths=1.8,
            label=label,
            zorder=6,
        )
    if committed_index is not None:
        point = candidates_2d[committed_index]
        axes.scatter(
            *point,
            marker="*",
            s=260,
            c="gold",
            edgecolors="black",
            linewidths=1.0,
            label=f"committed ({values[committed_index]:.4g})",
            zorder=7,
        )
    figure.colorbar(
        colour_source if colour_source is not None else scatter, ax=axes, label="score", format="%.4g"
    )
    axes.set_xlabel("principal direction 1 of the anchors")
    axes.set_ylabel("principal direction 2")
    axes.legend(loc="best", fontsize=8, framealpha=0.8)
    axes.set_title(title or "ExploRLer landscape", fontsize=10)
    figure.tight_layout()
    return figure


def figure_from_result(result: ExploreResult, title: str | None = None) -> Figure:
    """:func:`landscape_figure` for the :class:`~explorler_optim.ExploreResult` of one ``explore()``."""
    if result.anchor_coords.numel() == 0 and result.num_anchors == 0:
        raise ValueError("this ExploreResult holds no anchor coordinates")
    return landscape_figure(
        result.anchor_coords,
        result.candidate_coords,
        result.scores,
        incumbent_coords=result.incumbent_coords,
        incumbent_score=result.incumbent_score,
        committed_index=result.best_index if result.committed else None,
        title=title,
    )


def log_landscape(writer: Any, result: ExploreResult, step: int, tag: str = "explorler/landscape") -> None:
    """Log the landscape of ``result`` to a TensorBoard ``SummaryWriter`` as an image under ``tag``.

    Example:
        >>> # after result = optimizer.explore(evaluator)
        >>> # log_landscape(writer, result, global_step)
    """
    plt = require_matplotlib()
    figure = figure_from_result(result, title=f"ExploRLer landscape at step {step}")
    try:
        writer.add_figure(tag, figure, global_step=step, close=False)
    finally:
        plt.close(figure)


def save_figure(figure: Figure, path: str) -> None:
    """Write ``figure`` as a PNG atomically (temporary file, then rename)."""
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=directory, suffix=".png")
    os.close(handle)
    try:
        figure.savefig(temp, format="png")
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
