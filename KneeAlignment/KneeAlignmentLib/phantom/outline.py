"""Dense 2D outlines and the schema's landmark placement rule.

An outline is a dense polyline (M, 2) in millimetres of one bone's frame (x = u towards
the knee's medial side for a right knee, y = v distal; the shaft axis is u = 0). The
solids are built from these polylines and the landmarks are read off the same
polylines, so the ground truth is the outline itself.

Placement rule (the schema's): along a contour, landmarks lie at equal arc length
between consecutive named anchors. :class:`Chain` carries the anchors as vertex indices
of its polyline, and :meth:`Chain.sample` applies the rule exactly (piecewise-linear
arc length of the polyline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Chain", "catmull_rom", "bezier", "arc_length", "smoothstep"]


def bezier(p0, c0, c1, p1, n: int = 200) -> np.ndarray:
    """Cubic Bezier curve (n, 2) from p0 to p1 with control points c0, c1."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, c0, c1, p1 = (np.asarray(v, dtype=np.float64) for v in (p0, c0, c1, p1))
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c0 + 3 * (1 - t) * t**2 * c1 + t**3 * p1


def catmull_rom(points: np.ndarray, per_segment: int = 24) -> np.ndarray:
    """Centripetal Catmull-Rom spline through points (N, 2): (per_segment * (N - 1) + 1, 2).

    Passes through every input point (point i is output vertex i * per_segment), has
    no cusps or self-intersections within a segment, and turns a row of collinear,
    evenly spaced points into a straight line. The ends are extended by reflection.
    """
    p = np.asarray(points, dtype=np.float64)
    ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    out = [p[:1]]
    t_local = np.linspace(0.0, 1.0, per_segment + 1)[1:, None]
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        t0 = 0.0
        t1 = t0 + np.linalg.norm(p1 - p0) ** 0.5
        t2 = t1 + np.linalg.norm(p2 - p1) ** 0.5
        t3 = t2 + np.linalg.norm(p3 - p2) ** 0.5
        t = t1 + (t2 - t1) * t_local
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    return np.concatenate(out)


def arc_length(points: np.ndarray) -> np.ndarray:
    """(M,) cumulative arc length of a polyline (M, 2), starting at 0."""
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])


def smoothstep(x, lo: float, hi: float):
    """0 below lo, 1 above hi, C1-smooth in between (hi < lo reverses the ramp)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class Chain:
    """A dense polyline with named anchor vertices.

    ``points`` (M, 2) mm; ``anchors`` maps a name to a vertex index (kept sorted along
    the chain when the chain is edited with the methods below).
    """

    points: np.ndarray
    anchors: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.points[self.anchors[name]]

    def extremal(self, name: str, first: str, last: str, direction) -> None:
        """Set anchor ``name`` at the vertex between anchors ``first`` and ``last``
        that lies farthest along ``direction`` (2,)."""
        i0, i1 = self.anchors[first], self.anchors[last]
        lo, hi = min(i0, i1), max(i0, i1)
        self.anchors[name] = lo + int(np.argmax(self.points[lo:hi + 1] @ np.asarray(direction, float)))

    def at_level(self, name: str, first: str, last: str, v: float) -> None:
        """Insert a vertex where the chain between ``first`` and ``last`` first reaches
        level y = v (walking from ``first``) and anchor ``name`` there."""
        i0, i1 = self.anchors[first], self.anchors[last]
        step = 1 if i1 > i0 else -1
        idx = np.arange(i0, i1 + step, step)
        y = self.points[idx, 1] - v
        hits = np.flatnonzero(np.sign(y[:-1]) * np.sign(y[1:]) <= 0)
        if hits.size == 0:
            raise ValueError(f"the chain between {first} and {last} never reaches level {v:.3f}")
        k = hits[0]
        a, b = idx[k], idx[k + 1]
        ya, yb = self.points[a, 1] - v, self.points[b, 1] - v
        w = 0.0 if ya == yb else ya / (ya - yb)
        point = self.points[a] + w * (self.points[b] - self.points[a])
        self.insert(min(a, b) + 1, point, name)

    def insert(self, index: int, point, name: str | None = None) -> None:
        """Insert a vertex before ``index`` (anchors at or after it move up)."""
        self.points = np.insert(self.points, index, point, axis=0)
        self.anchors = {k: (i + 1 if i >= index else i) for k, i in self.anchors.items()}
        if name is not None:
            self.anchors[name] = index

    def cut(self, start: str | None = None, stop: str | None = None) -> None:
        """Drop the vertices before anchor ``start`` and after anchor ``stop``."""
        i0 = self.anchors[start] if start else 0
        i1 = self.anchors[stop] + 1 if stop else len(self.points)
        self.points = self.points[i0:i1]
        self.anchors = {k: i - i0 for k, i in self.anchors.items() if i0 <= i < i1}

    def join(self, other: Chain) -> Chain:
        """This chain followed by ``other`` (whose first vertex repeats this one's last)."""
        offset = len(self.points) - 1
        anchors = dict(self.anchors)
        anchors.update({k: i + offset for k, i in other.anchors.items()})
        return Chain(np.concatenate([self.points, other.points[1:]]), anchors)

    def sample(self, first: str, last: str, intervals: int) -> np.ndarray:
        """(intervals + 1, 2) points at equal arc length from anchor ``first`` to ``last``."""
        i0, i1 = self.anchors[first], self.anchors[last]
        seg = self.points[i0:i1 + 1] if i1 >= i0 else self.points[i1:i0 + 1][::-1]
        s = arc_length(seg)
        targets = np.linspace(0.0, s[-1], intervals + 1)
        out = np.stack([np.interp(targets, s, seg[:, 0]), np.interp(targets, s, seg[:, 1])], axis=1)
        out[0], out[-1] = seg[0], seg[-1]  # anchors exactly
        return out
