"""A straightforward raw-space Empty-Space Search, written from the method's description.

It works on full ``(n, P)`` anchors, one agent at a time, with no subspace trick. The library's
subspace implementation must reproduce it to floating-point tolerance; the overhead benchmark also
times it.
"""

from __future__ import annotations

import numpy as np


def raw_space_esa(
    anchors: np.ndarray,
    agents: int = 5,
    steps: int = 60,
    step_size: float = 1e-3,
    momentum: float = 0.3,
    epsilon: float = 0.5,
    neighbors: int = 6,
    snapshot_every: int = 20,
) -> np.ndarray:
    anchors = np.asarray(anchors, dtype=np.float64)
    n = anchors.shape[0]
    starts = []
    order = list(range(0, n, 2)) + list(range(1, n, 2))
    for i in order[: min(agents, n)]:
        distances = np.linalg.norm(anchors - anchors[i], axis=1)
        distances[i] = np.inf
        nearest = np.argsort(distances, kind="stable")[: min(neighbors - 1, n - 1)]
        starts.append(anchors[nearest].mean(axis=0))
    k = min(neighbors, n)
    out = []
    for x in starts:
        x = x.copy()
        c, mu = 0.0, np.zeros_like(x)
        stopped = False
        for step in range(steps):
            if step % snapshot_every == 0:
                out.append(x.copy())
            if stopped:
                continue
            distances = np.linalg.norm(anchors - x, axis=1)
            nearest = np.argsort(distances, kind="stable")[:k]
            d = distances[nearest]
            sigma = d.mean()
            force = np.zeros_like(x)
            for dl, index in zip(d, nearest):
                dl = max(dl, 1e-3)
                strength = 6 * epsilon / sigma * (2 * (sigma / dl) ** 13 - (sigma / dl) ** 7)
                force += strength * (x - anchors[index]) / dl
            magnitude = np.linalg.norm(force)
            if magnitude < 1e-7:
                stopped = True
                continue
            unit = force / magnitude
            move = unit * magnitude / (c + magnitude) + mu * c / (c + magnitude)
            x = x + step_size * move
            c = momentum * c + magnitude
            blended = momentum * mu + move
            mu = blended / np.linalg.norm(blended)
        out.append(x.copy())
    return np.stack(out)
