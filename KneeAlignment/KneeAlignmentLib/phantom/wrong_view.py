"""Radiographs that are not AP knees, for checking that quality control flags them.

The pipeline must not report an angle for a lateral knee, a hand, a chest, a pelvis or
an empty exposure; its networks were trained on AP knees only, so on these images
their confidences should collapse and QC raise ``wrong_view_suspected`` (or another
flag). These are crude projections - bone and soft tissue as analytic shapes, Beer-
Lambert attenuation, blur and quantum noise - made to share the AP phantom's look
(exposure, contrast, detector noise), not to be anatomically faithful.

``render_wrong_view(view, seed, size)`` -> (H, W) float64 in [0, 1] (bright = dense),
at 0.3 mm/px; ``WRONG_VIEWS`` lists the views.
"""

from __future__ import annotations

import numpy as np

from .xray import gaussian_blur

__all__ = ["WRONG_VIEWS", "MM_PER_PX", "render_wrong_view"]

WRONG_VIEWS = ("lateral_knee", "hand", "chest", "pelvis", "empty")
MM_PER_PX = 0.3
_MU_BONE, _MU_SOFT = 0.05, 0.02  # per mm, roughly bone and water at 60-70 kVp


def _capsule(x, y, a, b, radius):
    """Chord length (mm) through a cylinder of ``radius`` along segment a-b, per pixel."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1]) / float(d @ d), 0.0, 1.0)
    r2 = (x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2
    return 2.0 * np.sqrt(np.clip(radius**2 - r2, 0.0, None))


def _ellipsoid(x, y, centre, axes, angle_deg=0.0):
    """Chord length (mm) through an ellipsoid whose depth equals its smaller in-plane axis."""
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    u, v = (x - centre[0]) * c + (y - centre[1]) * s, -(x - centre[0]) * s + (y - centre[1]) * c
    q = 1.0 - (u / axes[0]) ** 2 - (v / axes[1]) ** 2
    return 2.0 * min(axes) * np.sqrt(np.clip(q, 0.0, None))


def _tube_bone(x, y, a, b, radius, cortex):
    """A hollow long bone: (bone chord, marrow chord) along a-b."""
    outer, inner = _capsule(x, y, a, b, radius), _capsule(x, y, a, b, radius - cortex)
    return outer - inner, inner


def _lateral_knee(x, y, rng, w, h):
    flex = rng.uniform(10.0, 45.0)
    knee = np.array([w * rng.uniform(0.42, 0.58), h * rng.uniform(0.45, 0.55)])
    up = np.radians(rng.uniform(-10.0, 10.0))
    down = up + np.radians(flex)
    fem_end = knee + 250.0 * np.array([np.sin(up), -np.cos(up)])
    tib_end = knee + 250.0 * np.array([-np.sin(down), np.cos(down)])
    bone = soft = 0.0
    b, m = _tube_bone(x, y, knee + [0, -25], fem_end, 14.0, 5.0)
    bone, soft = bone + b, soft + m
    b, m = _tube_bone(x, y, knee + [0, 30], tib_end, 13.0, 5.0)
    bone, soft = bone + b, soft + m
    bone = bone + 0.6 * _ellipsoid(x, y, knee + [0, -18], (32.0, 28.0))  # both condyles superimposed
    bone = bone + 0.6 * _ellipsoid(x, y, knee + [0, 22], (34.0, 16.0))  # tibial plateau seen edge-on
    bone = bone + 0.8 * _ellipsoid(x, y, knee + [45.0, -20.0], (12.0, 22.0), 10.0)  # patella, anterior
    soft = soft + _capsule(x, y, fem_end, knee, 60.0) + _capsule(x, y, knee, tib_end, 48.0)
    return bone, soft


def _hand(x, y, rng, w, h):
    wrist = np.array([w * rng.uniform(0.4, 0.6), h * rng.uniform(0.8, 0.9)])
    bone, soft = 0.0, _ellipsoid(x, y, wrist + [0, -90], (55.0, 80.0))
    for i, spread in enumerate(np.linspace(-30.0, 30.0, 5)):
        direction = np.radians(spread + rng.normal(0.0, 3.0))
        base = wrist + [(i - 2) * 14.0, -30.0]
        length = (60.0, 70.0, 75.0, 70.0, 55.0)[i]
        tip = base + np.array([np.sin(direction), -np.cos(direction)]) * (length + 80.0)
        meta = base + np.array([np.sin(direction), -np.cos(direction)]) * 70.0
        phalanges = _tube_bone(x, y, meta + 0.05 * (tip - meta), tip, 3.8, 1.3)[0]
        bone = bone + _tube_bone(x, y, base, meta, 4.5, 1.5)[0] + phalanges
        soft = soft + _capsule(x, y, meta, tip, 9.0)
    bone = bone + 0.7 * _ellipsoid(x, y, wrist, (35.0, 18.0))  # carpal bones
    return bone, soft


def _chest(x, y, rng, w, h):
    c = np.array([w * 0.5 + rng.normal(0, 15), h * 0.5 + rng.normal(0, 15)])
    soft = _ellipsoid(x, y, c, (150.0, 170.0)) * 1.2
    lungs = _ellipsoid(x, y, c + [-65, -20], (50.0, 110.0)) + _ellipsoid(x, y, c + [65, -20], (50.0, 110.0))
    soft = np.clip(soft - 1.1 * lungs, 0.0, None)
    bone = _tube_bone(x, y, c + [0, -170], c + [0, 170], 14.0, 4.0)[0]  # spine
    for k in range(9):  # ribs as shallow arcs
        yk = c[1] - 120 + 28 * k
        for sign in (-1, 1):
            t = np.linspace(0.0, 1.0, 8)
            pts = np.stack([c[0] + sign * (15 + 135 * t), yk + 30 * t - 45 * t**2], axis=1)
            for p, q in zip(pts[:-1], pts[1:]):
                bone = bone + 0.5 * _capsule(x, y, p, q, 4.0)
    return bone, soft


def _pelvis(x, y, rng, w, h):
    c = np.array([w * 0.5 + rng.normal(0, 15), h * 0.45 + rng.normal(0, 15)])
    soft = _ellipsoid(x, y, c + [0, 40], (170.0, 150.0))
    bone = (_ellipsoid(x, y, c + [-85, -40], (70.0, 60.0), -25) + _ellipsoid(x, y, c + [85, -40], (70.0, 60.0), 25)
            - 0.7 * _ellipsoid(x, y, c + [0, 20], (55.0, 45.0)))  # iliac wings around the inlet
    bone = np.clip(bone, 0.0, None) * 0.5
    for sign in (-1, 1):
        head = c + [sign * 95, 60]
        bone = bone + 0.8 * _ellipsoid(x, y, head, (22.0, 22.0))
        bone = bone + _tube_bone(x, y, head + [sign * 10, 15], head + [sign * 30, 300], 15.0, 5.0)[0]
    return bone, soft


def _empty(x, y, rng, w, h):
    return np.zeros_like(x), rng.uniform(0.0, 60.0) * np.ones_like(x)


_BUILDERS = {"lateral_knee": _lateral_knee, "hand": _hand, "chest": _chest, "pelvis": _pelvis, "empty": _empty}


def render_wrong_view(view: str, seed: int, size: tuple[int, int] = (1024, 832)) -> np.ndarray:
    """One radiograph of ``view`` (see ``WRONG_VIEWS``), (H, W) in [0, 1], seeded."""
    if view not in _BUILDERS:
        raise ValueError(f"view must be one of {WRONG_VIEWS}, got {view!r}")
    h, w = size
    rng = np.random.default_rng([seed, WRONG_VIEWS.index(view)])
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) * MM_PER_PX
    bone, soft = _BUILDERS[view](x, y, rng, w * MM_PER_PX, h * MM_PER_PX)
    line_integral = _MU_BONE * bone + _MU_SOFT * soft
    photons = rng.uniform(2e3, 2e4)
    signal = rng.poisson(photons * np.exp(-line_integral)) / photons  # quantum noise
    log_signal = -np.log(np.clip(gaussian_blur(signal, (rng.uniform(0.6, 1.5),) * 2), 1e-4, None))
    image = (log_signal - log_signal.min()) / max(float(np.ptp(log_signal)), 1e-6)
    return np.clip(image, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
