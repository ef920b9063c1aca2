"""Exact orthonormal coordinates for the affine hull of a set of anchors.

Every Empty-Space Search move is a combination of anchor differences, so the whole search lives in the
anchors' affine hull, which has at most ``n - 1`` dimensions for ``n`` anchors. :class:`AnchorSubspace`
gives that hull an orthonormal basis without ever forming a ``P x r`` matrix: the basis is
``B = D^T W`` where ``D`` holds the anchor differences and ``W`` comes from the eigendecomposition of
their small ``(n-1) x (n-1)`` Gram matrix. Distances are preserved exactly, so searching in these
coordinates gives the same points as searching in the raw parameter space, at a cost of a few passes
over the anchors instead of one per search step.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AnchorSubspace"]

# Columns processed at once: bounds the float64 working memory to about (n - 1) x 2**21 x 8 bytes.
_CHUNK = 1 << 21
# Directions whose squared singular value falls below this fraction of the largest are dropped as
# round-off; they carry less than ~1e-7 of the anchors' spread.
_RELATIVE_EIGENVALUE_TOL = 1e-14


class AnchorSubspace:
    """Orthonormal coordinates of the affine hull spanned by ``n`` anchors in ``P`` dimensions.

    Anchor ``i`` is ``origin + rows[i]``. The hull is centred on anchor 0, which has coordinates 0.

    Args:
        rows: ``(n, P)`` tensor, any floating dtype (e.g. ``bfloat16`` deltas).
        origin: optional ``(P,)`` tensor added to every row (defaults to zero).

    Attributes:
        coords: ``(n, r)`` float64 coordinates of the anchors, ``r <= n - 1`` the hull's rank.
        rank: ``r``.

    Example:
        >>> anchors = torch.randn(5, 1000)
        >>> sub = AnchorSubspace(anchors)
        >>> torch.allclose(sub.lift(sub.coords).float(), anchors, atol=1e-5)
        True
    """

    def __init__(self, rows: Tensor, origin: Tensor | None = None) -> None:
        if rows.dim() != 2 or rows.shape[0] < 1:
            raise ValueError(f"rows must be a (n, P) tensor with n >= 1, got shape {tuple(rows.shape)}")
        if origin is not None and origin.shape != rows.shape[1:]:
            raise ValueError(f"origin must have shape {tuple(rows.shape[1:])}, got {tuple(origin.shape)}")
        self.rows = rows
        self.origin = origin
        self.num_params = rows.shape[1]
        n = rows.shape[0]
        gram = torch.zeros(n - 1, n - 1, dtype=torch.float64, device=rows.device)
        for _, diff, _ in self._difference_chunks():
            gram += diff @ diff.T
        if n > 1:
            eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        else:
            eigenvalues, eigenvectors = gram.new_zeros(0), gram.new_zeros(0, 0)
        largest = float(eigenvalues.max()) if n > 1 else 0.0
        keep = eigenvalues > largest * _RELATIVE_EIGENVALUE_TOL
        if largest <= 0.0:
            keep = torch.zeros_like(eigenvalues, dtype=torch.bool)
        eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[:, keep]
        # B = D^T W has orthonormal columns: B^T B = W^T G W = I.
        self._weights = eigenvectors / eigenvalues.sqrt()
        self.rank = int(eigenvalues.numel())
        self.coords = torch.cat(
            [torch.zeros(1, self.rank, dtype=torch.float64, device=rows.device), gram @ self._weights]
        )

    def _difference_chunks(self, dtype: torch.dtype = torch.float64):
        """Yield ``(start, rows[1:] - rows[0], rows[0])`` in ``dtype``, a block of columns at a time."""
        for start in range(0, self.num_params, _CHUNK):
            block = self.rows[:, start : start + _CHUNK].to(dtype)
            yield start, block[1:] - block[:1], block[0]

    def lift(self, coords: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Map ``(m, r)`` coordinates back to ``(m, P)`` points (``origin`` included).

        The small mixing matrix is computed in float64; the ``P``-sized product runs in float64 when
        ``dtype`` is float64 and in float32 otherwise (the points differ from the anchors by sums of
        anchor differences, so float32 keeps them to float32 precision).

        Args:
            coords: ``(m, r)`` coordinates in this subspace.
            dtype: dtype of the result (default: the origin's dtype, else float64).
        """
        coords = coords.to(device=self.rows.device, dtype=torch.float64)
        if coords.dim() != 2 or coords.shape[1] != self.rank:
            raise ValueError(f"coords must be (m, {self.rank}), got {tuple(coords.shape)}")
        if dtype is None:
            dtype = self.origin.dtype if self.origin is not None else torch.float64
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        mixing = (coords @ self._weights.T).to(compute)  # (m, n - 1)
        out = torch.empty(coords.shape[0], self.num_params, dtype=dtype, device=self.rows.device)
        for start, diff, base in self._difference_chunks(compute):
            stop = start + diff.shape[1]
            if self.origin is not None:
                base = base + self.origin[start:stop].to(compute)
            block = torch.addmm(base.expand(coords.shape[0], -1), mixing, diff)
            if out.shape[1] == block.shape[1] and dtype == compute:
                return block
            out[:, start:stop] = block
        return out

    def project(self, point: Tensor) -> tuple[Tensor, float]:
        """Coordinates of the point of the hull nearest to ``point`` (shape ``(P,)``), and its distance."""
        point = point.to(device=self.rows.device)

        def offsets():
            for start, diff, base in self._difference_chunks():
                offset = point[start : start + diff.shape[1]].to(torch.float64) - base
                if self.origin is not None:
                    offset = offset - self.origin[start : start + diff.shape[1]].to(torch.float64)
                yield diff, offset

        inner = torch.zeros(self.rows.shape[0] - 1, dtype=torch.float64, device=self.rows.device)
        for diff, offset in offsets():
            inner += diff @ offset
        coords = inner @ self._weights
        # A second pass measures the residual directly; |x|^2 - |coords|^2 would cancel badly.
        mixing = self._weights @ coords
        squared = sum(float((offset - mixing @ diff).square().sum()) for diff, offset in offsets())
        residual = squared**0.5
        return coords, residual

    def __repr__(self) -> str:
        return f"AnchorSubspace(anchors={self.rows.shape[0]}, params={self.num_params}, rank={self.rank})"
