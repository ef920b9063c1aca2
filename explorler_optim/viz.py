"""The landscape view: a cycle's anchors, candidates and scores on the anchors' principal plane.

Everything here works in the anchors' low-dimensional subspace coordinates (see
:class:`~explorler_optim.subspace.AnchorSubspace`), which :meth:`ExploRLerOptimizer.explore` keeps in
its :class:`~explorler_optim.ExploreResult`, so drawing a view never touches the full parameter vector
and never re-evaluates a policy. matplotlib is needed (the ``viz`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from .files import atomic_write

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
    "landscape_line_figure",
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
        from explorler_optim.extras import install_hint

        raise ImportError(f"the landscape view needs matplotlib: {install_hint('viz')}") from error
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


def _round_levels(values: np.ndarray) -> np.ndarray:
    """Contour levels (and so colour-bar ticks) at round values: 0, 20, 40 rather than 65.31, 84.9."""
    from matplotlib.ticker import MaxNLocator

    values = values[np.isfinite(values)]
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0
    return np.asarray(MaxNLocator(nbins=10, steps=[1, 2, 5, 10]).tick_values(vmin, vmax))


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
    anchor_scores: Tensor | np.ndarray | None = None,
    note: str | None = None,
) -> Figure:
    """Draw one cycle on the anchors' principal plane.

    Anchors are numbered in recording order and joined as a path; candidates are coloured by score;
    a filled contour interpolates the scores over the plane; the incumbent (square), the committed
    point (star) and, with a dense ``grid``, its best point (plus) are marked; a colour bar gives the
    scale at round values. When the anchors span only a line, the vertical axis says so.

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
        anchor_scores: optional ``(n,)`` scores of the anchors themselves: the anchors are then
            filled with their score's colour.
        note: an extra line under the title (e.g. what the scores' noise allows one to read).

    Returns:
        A matplotlib ``Figure``.
    """
    plt = require_matplotlib()
    anchors = np.asarray(anchor_coords, dtype=np.float64)
    candidates = np.asarray(candidate_coords, dtype=np.float64).reshape(-1, anchors.shape[1])
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.shape[0] != candidates.shape[0]:
        raise ValueError(f"{candidates.shape[0]} candidates but {values.shape[0]} scores")
    anchor_values = None
    if anchor_scores is not None:
        anchor_values = np.asarray(anchor_scores, dtype=np.float64).reshape(-1)
        if anchor_values.shape[0] != anchors.shape[0]:
            raise ValueError(f"{anchors.shape[0]} anchors but {anchor_values.shape[0]} anchor scores")
    dense = None if grid is None else tuple(np.asarray(g, dtype=np.float64) for g in grid)
    center, basis = principal_plane(anchors)
    anchors_2d = (anchors - center) @ basis
    candidates_2d = (candidates - center) @ basis
    finite = np.isfinite(values)
    shown = [
        values[finite],
        np.asarray([] if incumbent_score is None else [incumbent_score], dtype=np.float64),
        anchor_values if anchor_values is not None else np.zeros(0),
        dense[2].ravel() if dense is not None else np.zeros(0),
    ]
    levels = _round_levels(np.concatenate(shown))

    figure, axes = plt.subplots(figsize=(6.4, 6.0), dpi=100)
    surface = _draw_surface(axes, candidates_2d[finite], values[finite], dense, levels)
    scatter = _draw_candidates(axes, candidates_2d, values, levels, candidate_label)
    _draw_anchor_path(axes, anchors_2d, anchor_values, levels)
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
        axes.scatter(
            *candidates_2d[committed_index],
            marker="*",
            s=260,
            c="gold",
            edgecolors="black",
            linewidths=1.0,
            label=f"committed ({values[committed_index]:.4g})",
            zorder=7,
        )
    if dense is not None:
        _mark_best_grid_point(axes, *dense)
    figure.colorbar(surface if surface is not None else scatter, ax=axes, label="score", ticks=levels)
    axes.set_xlabel("principal direction 1 of the anchors")
    if np.allclose(basis[:, 1], 0.0):
        axes.set_ylabel("(none: the anchors span a line)")
    else:
        axes.set_ylabel("principal direction 2")
    # below the plot, so that it never hides a marker
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    heading = title or "ExploRLer landscape"
    axes.set_title(heading + (f"\n{note}" if note else ""), fontsize=10)
    figure.tight_layout()
    return figure


def _draw_surface(axes: Any, points: np.ndarray, values: np.ndarray, dense: Any, levels: np.ndarray) -> Any:
    """The filled contour: the dense grid if given, else the scored points interpolated (3 or more)."""
    if dense is not None:
        xs, ys, grid_values = dense
        return axes.contourf(xs, ys, grid_values, levels=levels, cmap="viridis", alpha=0.85)
    if len(values) < 3:
        return None
    from matplotlib.tri import Triangulation

    try:
        triangulation = Triangulation(points[:, 0], points[:, 1])
        return axes.tricontourf(triangulation, values, levels=levels, cmap="viridis", alpha=0.6)
    except (ValueError, RuntimeError):  # collinear or duplicate points: no contour
        return None


def _draw_candidates(
    axes: Any, candidates_2d: np.ndarray, values: np.ndarray, levels: np.ndarray, label: str
) -> Any:
    """Scored candidates coloured by score; invalid (non-finite) ones as grey crosses."""
    finite = np.isfinite(values)
    scatter = axes.scatter(
        candidates_2d[finite, 0],
        candidates_2d[finite, 1],
        c=values[finite],
        cmap="viridis",
        vmin=float(levels[0]),
        vmax=float(levels[-1]),
        s=36,
        edgecolors="black",
        linewidths=0.5,
        label=label if len(values) else None,
        zorder=3,
    )
    if (~finite).any():
        axes.scatter(*candidates_2d[~finite].T, c="lightgrey", s=30, marker="x", label="invalid", zorder=3)
    return scatter


def _draw_anchor_path(axes: Any, anchors_2d: np.ndarray, anchor_values: Any, levels: np.ndarray) -> None:
    """The anchors in recording order, numbered and joined; filled with their scores when known."""
    axes.plot(anchors_2d[:, 0], anchors_2d[:, 1], "-", color="white", linewidth=2.5, zorder=4)
    if anchor_values is None:
        axes.plot(
            anchors_2d[:, 0], anchors_2d[:, 1], "o-", color="crimson", markersize=5, label="anchors", zorder=5
        )
    else:
        axes.plot(anchors_2d[:, 0], anchors_2d[:, 1], "-", color="crimson", linewidth=1.2, zorder=5)
        axes.scatter(
            anchors_2d[:, 0],
            anchors_2d[:, 1],
            c=anchor_values,
            cmap="viridis",
            vmin=float(levels[0]),
            vmax=float(levels[-1]),
            s=60,
            edgecolors="crimson",
            linewidths=1.8,
            label="anchors (filled with their score)",
            zorder=5,
        )
    for number, (x, y) in enumerate(anchors_2d):
        axes.annotate(str(number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, zorder=6)


def _mark_best_grid_point(axes: Any, xs: np.ndarray, ys: np.ndarray, grid_values: np.ndarray) -> None:
    if not np.isfinite(grid_values).any():
        return
    row, column = np.unravel_index(
        np.nanargmax(np.where(np.isfinite(grid_values), grid_values, np.nan)), grid_values.shape
    )
    axes.scatter(
        xs[column],
        ys[row],
        marker="P",
        s=140,
        c="white",
        edgecolors="black",
        linewidths=1.0,
        label=f"best grid point ({grid_values[row, column]:.4g})",
        zorder=7,
        clip_on=False,  # on the window's edge too
    )


def landscape_line_figure(
    positions: np.ndarray,
    scores: np.ndarray,
    *,
    anchor_positions: np.ndarray,
    anchor_scores: np.ndarray | None = None,
    incumbent_position: float | None = None,
    incumbent_score: float | None = None,
    standard_errors: np.ndarray | None = None,
    title: str | None = None,
    note: str | None = None,
    incumbent_label: str = "incumbent",
) -> Figure:
    """Score against position along a line: the landscape when the anchors span only one direction.

    Two anchors (or anchors on one line) span a line, not a plane; drawing a plane would repeat the
    same values in stripes. This draws the scores along that line instead, with the anchors, the
    incumbent and the best point marked and, when ``standard_errors`` are given, a band of +-2
    standard errors around the curve.

    Args:
        positions: ``(k,)`` positions along the line (the anchors' principal direction).
        scores: ``(k,)`` scores at those positions (non-finite ones are left out).
        anchor_positions: ``(n,)`` positions of the anchors on the same line.
        anchor_scores: optional ``(n,)`` scores of the anchors.
        incumbent_position: the incumbent's position, if known.
        incumbent_score: the incumbent's score, if known.
        standard_errors: optional ``(k,)`` standard errors of ``scores``.
        title: figure title.
        note: an extra line under the title.
        incumbent_label: legend label of the incumbent.

    Returns:
        A matplotlib ``Figure``.
    """
    plt = require_matplotlib()
    positions = np.asarray(positions, dtype=np.float64).reshape(-1)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.shape != positions.shape:
        raise ValueError(f"{positions.shape[0]} positions but {values.shape[0]} scores")
    finite = np.isfinite(values)
    figure, axes = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    axes.plot(positions[finite], values[finite], "-", color="tab:blue", linewidth=1.5, label="score")
    if standard_errors is not None:
        errors = np.asarray(standard_errors, dtype=np.float64).reshape(-1)
        band = finite & np.isfinite(errors)
        axes.fill_between(
            positions[band],
            values[band] - 2 * errors[band],
            values[band] + 2 * errors[band],
            color="tab:blue",
            alpha=0.2,
            label="+-2 standard errors",
        )
    anchor_positions = np.asarray(anchor_positions, dtype=np.float64).reshape(-1)
    for number, x in enumerate(anchor_positions):
        axes.axvline(x, color="crimson", linewidth=1.0, linestyle=":", zorder=1)
        axes.annotate(str(number), (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                      textcoords="offset points", fontsize=8, color="crimson")  # fmt: skip
    if anchor_scores is not None:
        axes.scatter(anchor_positions, anchor_scores, c="crimson", s=36, zorder=4, label="anchors")
    else:
        axes.plot([], [], ":", color="crimson", label="anchors")
    if incumbent_position is not None and incumbent_score is not None:
        axes.scatter(
            [incumbent_position], [incumbent_score], marker="s", s=90, facecolors="none", edgecolors="black",
            linewidths=1.8, label=f"{incumbent_label} ({incumbent_score:.4g})", zorder=6,
        )  # fmt: skip
    if finite.any():
        best = int(np.nanargmax(np.where(finite, values, np.nan)))
        axes.scatter(
            [positions[best]], [values[best]], marker="P", s=140, c="white", edgecolors="black",
            linewidths=1.0, label=f"best point ({values[best]:.4g})", zorder=7,
        )  # fmt: skip
    axes.set_xlabel("position along the anchors' line (the only direction they span)")
    axes.set_ylabel("score")
    # below the plot, so that it never hides a marker
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    heading = title or "ExploRLer landscape along a line"
    axes.set_title(heading + (f"\n{note}" if note else ""), fontsize=10)
    figure.tight_layout()
    return figure


def figure_from_result(result: ExploreResult, title: str | None = None) -> Figure:
    """:func:`landscape_figure` for the :class:`~explorler_optim.ExploreResult` of one ``explore()``.

    Args:
        result: what ``explore()`` returned (its anchor, candidate and incumbent coordinates).
        title: the figure's title.

    Returns:
        A matplotlib ``Figure``.

    Raises:
        ValueError: ``result`` holds no anchor coordinates.
    """
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

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (anything with ``add_figure``).
        result: what ``explore()`` returned.
        step: the global step the image is logged at.
        tag: the image's tag in TensorBoard.

    Raises:
        ImportError: matplotlib is not installed (the ``viz`` extra; the message says how).

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
    """Write ``figure`` as a PNG atomically (temporary file, then rename).

    The file gets the permissions a plain ``open(path, "w")`` would give (0o666 less the umask),
    not the owner-only ones of a ``tempfile.mkstemp`` file.

    Args:
        figure: a matplotlib ``Figure``.
        path: the PNG file to write.
    """
    atomic_write(path, lambda file: figure.savefig(file, format="png"))
