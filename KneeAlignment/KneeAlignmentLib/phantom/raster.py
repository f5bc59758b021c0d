"""Exact, vectorised rasterisation of closed polygons: inside test and edge distance.

Pixels are (x = column, y = row) with the centre of the top-left pixel at (0, 0).
A polygon (M, 2) is closed implicitly (last vertex joins the first) and filled by the
even-odd rule. Distances are sub-pixel exact because they come from the analytic
crossings of the outline with every pixel row and column, not from a binary mask:
for a pixel at horizontal distance d_h and vertical distance d_v from the outline,
d = (d_h^-2 + d_v^-2)^(-1/2) is the exact distance to a straight edge of any
orientation, and a close, smooth estimate near curved edges.
"""

from __future__ import annotations

import numpy as np

__all__ = ["crossings", "half_widths", "edge_distance"]


def crossings(polygon: np.ndarray, n: int, lo: float = 0.0, step: float = 1.0):
    """Crossings of a closed polygon (M, 2) with the lines y = lo + j * step, j in [0, n).

    Returns (xs, starts): xs (C,) crossing x positions sorted by line then x; the
    crossings of line j are xs[starts[j]:starts[j + 1]] (starts has n + 1 entries).
    An edge counts for the lines with y_min <= y < y_max (each vertex once).
    """
    a = np.asarray(polygon, dtype=np.float64)
    b = np.roll(a, -1, axis=0)
    ya, yb = (a[:, 1] - lo) / step, (b[:, 1] - lo) / step
    ymin, ymax = np.minimum(ya, yb), np.maximum(ya, yb)
    j0 = np.clip(np.ceil(ymin), 0, n).astype(np.int64)
    j1 = np.clip(np.ceil(ymax), 0, n).astype(np.int64)
    counts = j1 - j0
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0), np.zeros(n + 1, dtype=np.int64)
    edge = np.repeat(np.arange(len(a)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    line = np.repeat(j0, counts) + (np.arange(total) - first)
    t = (line - ya[edge]) / (yb[edge] - ya[edge])
    x = a[edge, 0] + t * (b[edge, 0] - a[edge, 0])
    order = np.lexsort((x, line))
    xs, line = x[order], line[order]
    starts = np.searchsorted(line, np.arange(n + 1))
    return xs, starts


def half_widths(polygon: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(L,) half the span between the outermost crossings at each of the evenly spaced
    ``levels`` (L,) of y; 0 where the polygon does not reach a level."""
    levels = np.asarray(levels, dtype=np.float64)
    step = levels[1] - levels[0] if len(levels) > 1 else 1.0
    xs, starts = crossings(polygon, len(levels), levels[0], step)
    out = np.zeros(len(levels))
    has = np.diff(starts) > 0
    if has.any():
        s = starts[:-1][has]
        e = starts[1:][has] - 1
        out[has] = 0.5 * (xs[e] - xs[s])
    return out


def _line_distances(polygon: np.ndarray, x0: int, y0: int, w: int, h: int):
    """Row-wise: (inside (h*w,), distance to the nearest crossing left or right (h*w,),
    span of the interval holding the pixel (h*w,), for pixel rows y0..y0+h-1 and
    columns x0..x0+w-1. Distances are inf where no crossing exists on that side."""
    xs, starts = crossings(polygon, h, float(y0), 1.0)
    rows = np.arange(h)
    px = np.arange(x0, x0 + w, dtype=np.float64)
    if xs.size == 0:
        n = h * w
        return np.zeros(n, bool), np.full(n, np.inf), np.full(n, np.inf)
    base = min(float(xs.min()), float(x0)) - 1.0
    span = max(float(xs.max()), float(x0 + w)) - base + 1.0
    line = np.repeat(rows, np.diff(starts))
    keys = line * span + (xs - base)
    pkeys = (rows[:, None] * span + (px - base)[None, :]).ravel()
    k = np.searchsorted(keys, pkeys, side="right")
    row_start = np.repeat(starts[:-1], w)
    row_end = np.repeat(starts[1:], w)
    left_n = k - row_start
    inside = (left_n & 1).astype(bool)
    x = np.tile(px, h)
    has_left, has_right = left_n > 0, k < row_end
    safe = len(xs) - 1
    left = np.where(has_left, xs[np.clip(k - 1, 0, safe)], -np.inf)
    right = np.where(has_right, xs[np.clip(k, 0, safe)], np.inf)
    dist = np.minimum(x - left, right - x)
    return inside, dist, right - left


def edge_distance(polygon: np.ndarray, box: tuple[int, int, int, int], *, rows: bool = False):
    """Distance (px) of every pixel of ``box`` = (x0, y0, w, h) to a closed polygon (M, 2) px.

    Returns (inside (h, w) bool, distance (h, w) float64 >= 0). With ``rows``, only the
    row-wise scan is made and the result is (inside, distance along the row, half-width
    of the row interval holding the pixel), which describes an elongated body crossing
    the rows (a limb) exactly.
    """
    x0, y0, w, h = box
    inside, d_row, span = _line_distances(polygon, x0, y0, w, h)
    if rows:
        return inside.reshape(h, w), d_row.reshape(h, w), (0.5 * span).reshape(h, w)
    swapped = np.asarray(polygon, dtype=np.float64)[:, ::-1]
    _, d_col, _ = _line_distances(swapped, y0, x0, h, w)
    d_col = d_col.reshape(w, h).T.ravel()
    with np.errstate(divide="ignore"):
        d = 1.0 / np.sqrt(1.0 / d_row**2 + 1.0 / d_col**2)
    return inside.reshape(h, w), d.reshape(h, w)
