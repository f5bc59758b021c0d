"""X-ray physics of the phantom: projected solids -> line integrals -> detector -> DR image.

1. Line integrals. Each solid is a 3D body whose AP chord at a pixel follows from the
   distance d to its outline: an elliptical cross-section of half-width rho and half-
   depth b gives T(d) = 2 b sqrt(x (2 - x)), x = min(d / rho, 1); for a shaft rho is the
   outline's local half-width, so T is exactly the chord through an elliptic tube. Bones
   are shells: the same formula for the inner surface (offset by the cortex thickness)
   splits the chord into cortex and interior (cancellous bone with a trabecular texture,
   or fatty marrow in the diaphysis). Tangential rays through the shell make cortices
   bright at the edges, as on film. Attenuation sums mu * path length per material
   (mu at the beam's effective energy, from the tube voltage), soft tissue being
   displaced by whatever lies in it.
2. Detector. Beer-Lambert primary with heel effect and inverse-square falloff, beam
   hardening, collimation, scatter (a wide low-pass of where the beam interacts, scaled
   to a scatter-to-primary ratio; dense objects shadow part of it), quantum noise
   (Poisson, Gaussian approximation) plus electronic noise, then the scintillator's
   light spread blurring signal and noise alike.
3. Processing as a DR console does it: log transform, large-scale equalisation (implants
   segmented out first) and unsharp-mask detail enhancement (with its halo round metal),
   a window from the anatomy's histogram (median soft tissue and a high bone percentile
   to chosen display levels, so air is black and metal saturates), tone curve, 12-16-bit
   output; burned-in text; optional black shutter over the collimated border.

Anatomy is rendered on a grid of about ``RENDER_MM`` mm and its intensity upsampled;
metal, cement, polyethylene, the lead marker and the calibration ball are rendered at
the output resolution so their edges stay sharp; noise is generated at the output
resolution.

Arrays: images (H, W) at the output size, (h, w) on the render grid; pixel (x, y) with
the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from .annotate import glyphs
from .imaging import ImagingParams, field_coordinates
from .joint import Knee, limb_outline
from .outline import smoothstep
from .raster import edge_distance

__all__ = ["MATERIALS", "RENDER_MM", "Rendered", "attenuation", "gaussian_blur", "render"]

RENDER_MM = 0.3

#: Linear attenuation (1/mm) at 40 and 60 keV (NIST XCOM mass attenuation x density).
MATERIALS = {
    "muscle": (0.0282, 0.0215),
    "fat": (0.0241, 0.0187),
    "cortical": (0.1278, 0.0604),
    "red_marrow": (0.0270, 0.0207),
    "yellow_marrow": (0.0245, 0.0190),
    "PE": (0.0230, 0.0180),        # UHMW polyethylene insert
    "cement": (0.110, 0.058),      # PMMA with barium sulphate
    "PMMA": (0.0293, 0.0220),      # marker holder
    "CoCr": (3.0, 1.1),
    "Ti": (0.89, 0.32),
    "steel": (2.87, 0.95),
    "lead": (16.0, 5.7),
}
BONE_VOLUME_FRACTION = 0.22  # cancellous bone: trabeculae in red marrow
_METAL_EDGE_PX = 0.5


def effective_energy_kev(kvp: float) -> float:
    """Mean energy of the beam behind the knee (filtered and hardened), keV."""
    return 0.42 * kvp + 13.0


def attenuation(kvp: float) -> dict[str, float]:
    """mu (1/mm) of every material at the effective energy of ``kvp`` (power law in energy)."""
    e = effective_energy_kev(kvp)
    out = {}
    for name, (m40, m60) in MATERIALS.items():
        k = np.log(m60 / m40) / np.log(1.5)
        out[name] = float(m40 * (e / 40.0) ** k)
    return out


@dataclass(frozen=True, eq=False)
class Rendered:
    """The output of :func:`render`: display values and where things are.

    ``display``: (H, W) uint16 in [0, 2**bits_stored - 1], bright = dense.
    ``landmarks_px``: (K, 2) (x, y). ``metal_mask``: (H, W) bool, metal components.
    ``field_mask``: (H, W) bool, the exposed (collimated) field.
    """

    display: np.ndarray
    landmarks_px: np.ndarray
    metal_mask: np.ndarray
    field_mask: np.ndarray


def gaussian_blur(img: np.ndarray, sigma_px) -> np.ndarray:
    """Recursive Gaussian (SimpleITK, one thread: deterministic and one core), sigma (x, y) px."""
    flt = sitk.SmoothingRecursiveGaussianImageFilter()
    flt.SetSigma([max(float(s), 0.6) for s in sigma_px])
    flt.SetNumberOfThreads(1)
    return sitk.GetArrayFromImage(flt.Execute(sitk.GetImageFromArray(np.ascontiguousarray(img, np.float32))))


def _upsample_axis(img: np.ndarray, f: int, n: int, axis: int) -> np.ndarray:
    """Linear upsampling by the integer ``f`` along ``axis`` to length ``n``, pixel centres aligned."""
    if f == 1:
        return img
    a = np.moveaxis(img, axis, 0)
    nxt = np.concatenate([a[1:], a[-1:]])
    prv = np.concatenate([a[:1], a[:-1]])
    out = np.empty((a.shape[0] * f,) + a.shape[1:], dtype=np.float32)
    for k in range(f):
        w = (k - (f - 1) / 2.0) / f
        out[k::f] = (1.0 - abs(w)) * a + abs(w) * (nxt if w > 0 else prv)
    return np.moveaxis(out[:n], 0, axis)


def upsample(img: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) render grid -> (H, W) output grid, bilinear, centres aligned (f integer)."""
    return _upsample_axis(_upsample_axis(img, f, shape[0], 0), f, shape[1], 1)


def _downsample_mean(img: np.ndarray, q: int) -> np.ndarray:
    h, w = img.shape
    hh, ww = -(-h // q) * q, -(-w // q) * q
    padded = np.pad(img, ((0, hh - h), (0, ww - w)), mode="edge")
    return padded.reshape(hh // q, q, ww // q, q).mean(axis=(1, 3))


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample img (h, w) at float pixel positions (clamped at the border)."""
    h, w = img.shape
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2 if h > 1 else 0)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    return ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1])
            + fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))


def _chord(d_mm, half_depth, falloff):
    """AP chord (mm) through an elliptical cross-section at distance d_mm inside its outline."""
    x = np.minimum(d_mm / falloff, 1.0)
    return 2.0 * half_depth * np.sqrt(x * (2.0 - x))


def _box(polygon: np.ndarray, w: int, h: int, pad: int = 2):
    x0 = int(max(0, np.floor(polygon[:, 0].min()) - pad))
    y0 = int(max(0, np.floor(polygon[:, 1].min()) - pad))
    x1 = int(min(w, np.ceil(polygon[:, 0].max()) + pad + 1))
    y1 = int(min(h, np.ceil(polygon[:, 1].max()) + pad + 1))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


class _Grid:
    """A pixel grid and its map from the knee frame: p_px = a @ p_mm + c."""

    def __init__(self, a: np.ndarray, c: np.ndarray, shape: tuple[int, int], mm_per_px: float):
        self.a, self.c, self.shape, self.mm = a, c, shape, mm_per_px
        self.a_inv = np.linalg.inv(a)

    def to_px(self, points_mm: np.ndarray) -> np.ndarray:
        return points_mm @ self.a.T + self.c

    def frame_coords(self, pose, box, idx):
        """(u, v) mm in the frame of ``pose`` (frame -> knee) of flat pixel indices of ``box``."""
        x0, y0, w, _ = box
        ys, xs = np.divmod(idx, w)
        g = pose.rot.T @ self.a_inv
        g0 = -g @ self.c - pose.rot.T @ pose.shift
        px = xs + x0
        py = ys + y0
        return g[0, 0] * px + g[0, 1] * py + g0[0], g[1, 0] * px + g[1, 1] * py + g0[1]


def _texture(rng: np.random.Generator, shape, mm_per_px: float) -> np.ndarray:
    """Trabecular texture (zero mean, ~unit std): the ridges of band-limited noise form a
    network of struts ~1-2 mm apart, elongated along y as the load-bearing trabeculae."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    band = gaussian_blur(noise, (0.38 / mm_per_px, 0.62 / mm_per_px)) - gaussian_blur(noise, (1.15 / mm_per_px, 1.9 / mm_per_px))
    band /= max(float(band.std()), 1e-6)
    struts = np.exp(-(band / 0.5) ** 2)
    struts -= struts.mean()
    struts /= max(float(struts.std()), 1e-6)
    # bone is not equally coarse everywhere: modulate the strut contrast over ~1 cm
    q = max(1, int(round(2.0 / mm_per_px)))
    small = (-(-shape[0] // q), -(-shape[1] // q))
    m = gaussian_blur(rng.standard_normal(small, dtype=np.float32), (6.0 / (mm_per_px * q),) * 2)
    m = upsample((m / max(float(m.std()), 1e-6)).astype(np.float32), q, shape)
    return struts * np.clip(1.0 + 0.45 * m, 0.2, 2.0)


def _bone_into(P, knee: Knee, name: str, grid: _Grid, mu: dict, tex: np.ndarray, keep, mask: np.ndarray):
    """Add one bone's attenuation to the line-integral map P (render grid) in place."""
    bone, pose = knee.bones[name], knee.poses[name]
    poly = grid.to_px(pose.apply(bone.polygon))
    h, w = grid.shape
    box = _box(poly, w, h)
    if box is None:
        return
    x0, y0, bw, bh = box
    inside, d = edge_distance(poly, box)
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return
    u, v = grid.frame_coords(pose, box, idx)
    prof = bone.profile
    b = np.interp(v, prof["v"], prof["half_depth"])
    rho = np.interp(v, prof["v"], prof["falloff"])
    t = np.interp(v, prof["v"], prof["cortex"])
    marrow = np.interp(v, prof["v"], prof["marrow"])
    density = np.interp(v, prof["v"], prof["density"])
    d_mm = d.ravel()[idx] * grid.mm
    if name in ("femur", "tibia", "fibula"):
        # living cortices: thickness waves along the shaft and differs between the sides
        # (eccentric canal); the periosteal outline, the ground truth, is untouched
        amp, wavelength, phase, ecc = knee.anatomy.cortex_wave
        side = {"femur": 1.0, "tibia": -1.0, "fibula": 0.5}[name]
        t = t * (1.0 + amp * np.sin(v / wavelength + phase + side) + side * ecc * np.tanh(u / 4.0))
    outer = _chord(d_mm, b, rho)
    inner = np.where(d_mm > t, _chord(np.maximum(d_mm - t, 0.0), np.maximum(b - t, 0.3),
                                      np.maximum(rho - t, 0.3)), 0.0)
    a = knee.anatomy
    cortex = outer - inner
    if name == "tibia" and abs(a.plateau_tilt_deg) > 0.2:
        cortex, inner = _tilted_plateau(bone, u, v, b, cortex, inner, a.plateau_tilt_deg)
    physis = bone.levels.get("physis")
    if physis is not None and physis[1] > 0:  # healed growth plate: a thin sclerotic plate seen edge-on
        level, amount, bow, phase = physis
        v_scar = level + bow * (u / 40.0) ** 2 + 1.2 * np.sin(u / 7.0 + phase)
        density = density * (1.0 + amount * np.exp(-(((v - v_scar) / 0.8) ** 2)))
    if a.sclerosis > 0 and name in ("femur", "tibia"):
        toward = 1.0 if a.narrow_side == "medial" else -1.0
        compartment = smoothstep(toward * u, 4.0, 14.0)
        near = smoothstep(np.abs(v - bone.levels["joint"]), 18.0, 6.0)
        density = density * (1.0 + 1.4 * a.sclerosis * compartment * near * np.exp(-d_mm / 4.0))
    if keep is not None:
        point, normal = keep
        k = smoothstep((u - point[0]) * normal[0] + (v - point[1]) * normal[1], -0.3, 0.3)
        cortex, inner = cortex * k, inner * k
    cancellous = BONE_VOLUME_FRACTION * mu["cortical"] + (1 - BONE_VOLUME_FRACTION) * mu["red_marrow"]
    tex_gain = 0.05 * (1.0 - 0.4 * a.osteoporosis)
    trab = tex[y0:y0 + bh, x0:x0 + bw].ravel()[idx]
    interior = ((1.0 - marrow) * (cancellous * density * (1.0 + tex_gain * trab) - mu["muscle"])
                + marrow * (mu["yellow_marrow"] - mu["muscle"]))
    add = np.zeros(bw * bh, dtype=np.float32)
    add[idx] = (mu["cortical"] - mu["muscle"]) * cortex + interior * inner
    P[y0:y0 + bh, x0:x0 + bw] += add.reshape(bh, bw)
    mask[y0:y0 + bh, x0:x0 + bw] |= (add > 0.05).reshape(bh, bw)


def _tilted_plateau(bone, u, v, half_depth, cortex, inner, tilt_deg):
    """The plateau seen obliquely (posterior slope against the beam): below the upper rim
    the bone fills the depth gradually over delta = depth * tan(tilt), and rays in that
    band run along the subchondral plate (path t / sin(tilt)): a bright band, as on film."""
    chain = bone.chain
    top = chain.points[chain.anchors["TLP00"]:chain.anchors["TMP00"] + 1]
    tu = np.maximum.accumulate(top[:, 0])
    surface = np.interp(u, tu, top[:, 1])
    theta = np.radians(abs(tilt_deg))
    depth = 2.0 * half_depth
    delta = np.maximum(depth * np.tan(theta), 1e-3)
    across = smoothstep(u, tu[0], tu[0] + 4.0) * smoothstep(u, tu[-1], tu[-1] - 4.0)
    below = v - surface
    ramp = 1.0 - across * (1.0 - np.clip(below / delta, 0.0, 1.0))
    inside_band = smoothstep(below, -0.2, 0.4) * smoothstep(below, delta + 0.6, delta - 0.6)
    plate = across * inside_band * np.minimum(0.6 / np.sin(theta), 0.35 * depth)
    return cortex * ramp + plate, inner * ramp


def _limb_into(P, knee: Knee, grid: _Grid, mu: dict, rng: np.random.Generator):
    """Soft tissue: muscle inside a subcutaneous fat layer, elliptical limb cross-section."""
    h, w = grid.shape
    ratio = knee.anatomy.limb_ap_ratio
    chords = []
    for outline in limb_outline(knee):
        inside, d_row, half = edge_distance(grid.to_px(outline), (0, 0, w, h), rows=True)
        d = np.where(inside, d_row, 0.0)
        half = np.where(inside, half, 0.0)
        chords.append(2.0 * ratio * grid.mm * np.sqrt(np.maximum(d * (2.0 * half - d), 0.0)))
    skin, muscle = chords
    # muscle bellies and intermuscular fat: smooth +-3 % and thin fat planes
    q = max(1, int(round(1.5 / grid.mm)))
    small = (-(-h // q), -(-w // q))
    n = rng.standard_normal(small, dtype=np.float32)
    lumps = gaussian_blur(n, (10.0 / (grid.mm * q),) * 2)
    lumps /= max(float(lumps.std()), 1e-6)
    band = gaussian_blur(n, (2.5 / (grid.mm * q), 5.0 / (grid.mm * q))) - lumps * float(lumps.std())
    band /= max(float(band.std()), 1e-6)
    planes = np.exp(-(band / 0.3) ** 2)
    field = upsample((0.012 * lumps - 0.008 * planes).astype(np.float32), q, (h, w))
    P += (mu["muscle"] * skin + (mu["fat"] - mu["muscle"]) * np.maximum(skin - muscle, 0.0)
          + mu["muscle"] * muscle * field).astype(np.float32)
    return skin


def _component_patch(knee: Knee, name: str, grid: _Grid, mu_value: float):
    """(box, P_add (bh, bw)) of one implant part at the output resolution, anti-aliased."""
    comp, pose = knee.components[name], knee.poses[name]
    poly = grid.to_px(pose.apply(comp.polygon))
    h, w = grid.shape
    box = _box(poly, w, h, pad=3)
    if box is None:
        return None
    inside, d = edge_distance(poly, box)
    signed = np.where(inside, d, -d).ravel()
    idx = np.flatnonzero(signed > -_METAL_EDGE_PX)
    _, v = grid.frame_coords(pose, box, idx)
    s = signed[idx]
    coverage = np.clip(s + _METAL_EDGE_PX, 0.0, 1.0)
    d_mm = np.maximum(s, 0.5) * grid.mm
    b = np.interp(v, comp.profile["v"], comp.profile["half_depth"])
    rho = np.interp(v, comp.profile["v"], comp.profile["falloff"])
    out = np.zeros(box[2] * box[3], dtype=np.float32)
    out[idx] = mu_value * _chord(d_mm, b, rho) * coverage
    return box, out.reshape(box[3], box[2])


def _marker_patch(marker: dict, grid: _Grid, mu: dict):
    """Lead letter in a PMMA holder, turned by the marker's angle."""
    letter = glyphs(marker["letter"], marker["height_px"], bold=True)
    size = int(np.ceil(1.7 * marker["height_px"]))
    cx, cy = marker["centre"]
    h, w = grid.shape
    x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
    xs, ys = np.meshgrid(np.arange(x0, x0 + size), np.arange(y0, y0 + size))
    t = np.radians(marker["angle_deg"])
    lx = np.cos(t) * (xs - cx) + np.sin(t) * (ys - cy)
    ly = -np.sin(t) * (xs - cx) + np.cos(t) * (ys - cy)
    gh, gw = letter.shape
    alpha = _bilinear(np.pad(letter, 1), lx + gw / 2 + 1, ly + gh / 2 + 1)
    alpha[(np.abs(lx) > gw / 2 + 1) | (np.abs(ly) > gh / 2 + 1)] = 0.0
    holder = (np.abs(lx) < 0.62 * size) & (np.abs(ly) < 0.62 * size)
    p_add = (mu["lead"] * 1.2 * alpha + mu["PMMA"] * 6.0 * holder).astype(np.float32)
    return _clip_patch((x0, y0, size, size), p_add, w, h)


def _ball_patch(ball: dict, grid: _Grid, mu: dict):
    cx, cy = ball["centre"]
    r = 0.5 * ball["diameter_px"]
    x0, y0 = int(np.floor(cx - r - 2)), int(np.floor(cy - r - 2))
    size = int(np.ceil(2 * r + 5))
    xs, ys = np.meshgrid(np.arange(x0, x0 + size), np.arange(y0, y0 + size))
    rr = np.hypot(xs - cx, ys - cy)
    chord = 2.0 * grid.mm * np.sqrt(np.maximum(r * r - rr * rr, 0.0))
    h, w = grid.shape
    return _clip_patch((x0, y0, size, size), (mu["steel"] * chord).astype(np.float32), w, h)


def _clip_patch(box, values, w, h):
    x0, y0, bw, bh = box
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + bw, w), min(y0 + bh, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    return (cx0, cy0, cx1 - cx0, cy1 - cy0), values[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def _field_mask(im: ImagingParams, xs: np.ndarray, ys: np.ndarray, penumbra_px: float) -> np.ndarray:
    """Exposure factor (0..1) of the collimated field at output-pixel positions (broadcast)."""
    if im.collimation is None:
        return np.ones(np.broadcast_shapes(xs.shape, ys.shape), dtype=np.float32)
    h, w = im.size
    out = None
    for dist in field_coordinates(im.collimation, xs, ys, w, h):
        s = smoothstep(dist, -penumbra_px, penumbra_px) if penumbra_px > 0 else (dist >= 0).astype(np.float32)
        out = s if out is None else out * s
    return out.astype(np.float32)


def render(knee: Knee, im: ImagingParams, rng_texture: np.random.Generator,
           rng_noise: np.random.Generator) -> Rendered:
    """Render the radiograph of ``knee`` acquired as ``im`` (see the module docstring)."""
    H, W = im.size
    f = max(1, int(round(RENDER_MM / im.spacing_mm)))  # render grid: f x f output pixels each
    h, w = -(-H // f), -(-W // f)
    c_full = np.asarray(im.centre_px, dtype=np.float64)
    fine = _Grid(im.matrix, c_full, (H, W), im.spacing_mm)
    coarse = _Grid(im.matrix / f, (c_full - (f - 1) / 2.0) / f, (h, w), im.spacing_mm * f)
    mu = attenuation(im.kvp)

    # 1. line integrals of the anatomy (render grid)
    P = np.zeros((h, w), dtype=np.float32)
    body = _limb_into(P, knee, coarse, mu, rng_texture)
    tex = _texture(rng_texture, (h, w), coarse.mm)
    bone_mask = np.zeros((h, w), dtype=bool)
    for name in ("fibula", "tibia", "femur", "trochlea", "patella"):
        bone_frame = "tibia" if name in ("tibia", "fibula") else "femur"
        keep = knee.resection.get(bone_frame) if knee.resection and name in ("femur", "trochlea", "tibia") else None
        _bone_into(P, knee, name, coarse, mu, tex, keep, bone_mask)
    if im.other_leg_gap_mm is not None:
        body = _other_leg(P, body, im, f, coarse.mm)
    in_body = body > 20.0

    # 2. exposure and scatter (render grid); n0: quanta per output pixel, open beam
    n0 = im.dose_per_mm2 * im.imager_spacing_mm ** 2
    primary, field_r = _primary(P, im, coarse, f, n0)
    scatter = _scatter(primary, P, im, coarse, in_body)

    # 3. on the output grid: implants, marker and ball, then the detector
    extra, metal = _dense_objects(knee, im, fine, mu)
    primary_full = upsample(primary, f, (H, W))
    scatter_full = upsample(scatter, f, (H, W))
    box = _nonzero_box(extra)
    if box is not None:
        y0, y1, x0, x1 = box
        sub = extra[y0:y1, x0:x1]
        transmitted = np.exp(-sub / (1.0 + im.beam_hardening * sub))
        primary_full[y0:y1, x0:x1] *= transmitted
        # a dense object also stops the scatter made in the tissue in front of it (and its own
        # scatter is forward-peaked and absorbed): behind metal about a third remains
        scatter_full[y0:y1, x0:x1] *= 1.0 - 0.65 * (1.0 - transmitted)
    expected = primary_full + scatter_full
    # quantum noise (Poisson, Gaussian approximation) and electronic noise, then the
    # scintillator's light spread blurs signal and noise alike
    noise = rng_noise.standard_normal((H, W), dtype=np.float32)
    counts = _binomial(expected + np.sqrt(expected + im.electronic_noise ** 2) * noise)
    log_image = np.float32(np.log(n0)) - np.log(np.maximum(counts, 0.5))

    # 4. DR processing, derived from the noiseless image on the render grid
    log_r = np.float32(np.log(n0)) - np.log(np.maximum(primary + scatter, 0.5))
    metal_r, implant_r = _with_dense_objects(log_r, expected, extra, metal, box, f, n0)
    correction, lo, hi = _processing(log_r, im, coarse, field_r > 0.5, in_body, bone_mask, metal_r, implant_r)
    processed = log_image + upsample(correction, f, (H, W))
    y = np.clip((processed - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0.0, 1.0)
    display = _tone_lut(im.gamma, im.s_curve, im.bits_stored)[(y * 65535.0 + 0.5).astype(np.uint16)]

    # 5. shutter and burned-in text
    if im.collimation is not None:
        field_full = _field_mask(im, np.arange(W, dtype=np.float64)[None, :],
                                 np.arange(H, dtype=np.float64)[:, None], 0.0) > 0.5
        if im.shutter_black:
            display[~field_full] = 0
    else:
        field_full = np.ones((H, W), dtype=bool)
    for item in im.texts:
        _burn_text(display, item, (1 << im.bits_stored) - 1)
    if im.long_leg:
        display = _film_export(display, im)
    return Rendered(display=display, landmarks_px=fine.to_px(knee.landmarks_mm), metal_mask=metal,
                    field_mask=field_full)


def _other_leg(P: np.ndarray, body: np.ndarray, im: ImagingParams, f: int, mm: float) -> np.ndarray:
    """Add the other leg of a standing film to the line integrals ``P`` (render grid of
    ``mm`` per pixel, ``f`` output pixels each; in place): this leg mirrored about a vertical
    line beyond its medial skin, ``im.other_leg_gap_mm`` from it at the knee's row. Returns
    the body thickness with the other leg's."""
    h, w = P.shape
    medial = 1.0 if im.side == "R" else -1.0  # medial side's x direction
    row = int(np.clip(round((im.centre_px[1] - (f - 1) / 2.0) / f), 0, h - 1))
    cols = np.flatnonzero(body[row] > 20.0)
    if cols.size == 0:
        return body
    skin = float(cols.max() if medial > 0 else cols.min())
    mirror = skin + medial * 0.5 * im.other_leg_gap_mm / mm  # render px
    source = np.rint(2.0 * mirror - np.arange(w)).astype(int)
    ok = (source >= 0) & (source < w) & ((np.arange(w) - mirror) * medial > 0)  # only beyond the mirror
    P[:, ok] += P[:, source[ok]]  # the sources lie on this side of the mirror, the targets beyond it
    body = body.copy()
    body[:, ok] = np.maximum(body[:, ok], body[:, source[ok]])
    return body


def _film_export(display: np.ndarray, im: ImagingParams) -> np.ndarray:
    """A long-leg film's knee as exported: ruler ticks and a stitching seam on the film,
    then denoised, 8-bit values between the export's black and white levels,
    JPEG-compressed; returned at ``bits_stored`` (multiples of 2**(bits-8))."""
    from io import BytesIO

    from PIL import Image  # matplotlib's dependency; only the long-leg export needs it

    maxval = (1 << im.bits_stored) - 1
    y = display.astype(np.float32) / np.float32(maxval)
    H, W = y.shape
    if im.seam is not None:
        r = int(np.clip(im.seam["row"], 1, H - 2))
        y[r:] *= np.float32(im.seam["gain"])
        y[r - 1:r + 1] += np.float32(im.seam["line"])
    if im.ruler is not None:
        _draw_ruler(y, im)
    e = im.export
    y = e["black"] + (e["white"] - e["black"]) * gaussian_blur(y, (e["smooth_px"],) * 2)
    eight = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
    if im.jpeg_quality is not None:
        buffer = BytesIO()
        Image.fromarray(eight).save(buffer, format="JPEG", quality=int(im.jpeg_quality))
        eight = np.asarray(Image.open(BytesIO(buffer.getvalue())).convert("L"))
    return np.round(eight.astype(np.float64) * (maxval / 255.0)).astype(np.uint16)


def _draw_ruler(y: np.ndarray, im: ImagingParams) -> None:
    """A radiopaque ruler along the film edge: ticks every 5 mm (longer at each cm), in place."""
    H, W = y.shape
    mm = im.spacing_mm
    x0, direction = im.ruler["x"], im.ruler["direction"]
    rows = np.arange(H, dtype=np.float64)
    pos_mm = rows * mm + im.ruler["offset_mm"]
    k = np.rint(pos_mm / 5.0)
    near = np.abs(pos_mm - 5.0 * k) < max(0.25, 0.6 * mm)  # a tick about 0.5 mm wide
    length_mm = np.where(k % 2 == 0, 6.0, 3.0)
    xs = np.arange(W, dtype=np.float64)
    along = (xs[None, :] - x0) * direction * mm  # mm from the ruler's base towards the ticks' tips
    ticks = near[:, None] & (along >= 0.0) & (along <= length_mm[:, None])
    base = np.abs(along) < 0.4  # the ruler's long edge
    y[ticks | base] = np.maximum(y[ticks | base], np.float32(0.95))


def _primary(P, im: ImagingParams, grid: _Grid, f: int, n0: float):
    """Primary quanta per output pixel on the render grid, and the collimated field (0..1):
    heel effect along y, inverse square and obliquity falloff, beam hardening."""
    H, W = im.size
    h, w = grid.shape
    xr = np.arange(w) * f + (f - 1) / 2.0  # output-pixel positions of render-pixel centres
    yr = np.arange(h) * f + (f - 1) / 2.0
    heel = 1.0 + im.heel * (yr / max(H - 1, 1) - 0.5)
    bx, by = im.beam_centre[0] * W, im.beam_centre[1] * H
    r2 = ((xr[None, :] - bx) ** 2 + (yr[:, None] - by) ** 2) * im.imager_spacing_mm ** 2
    falloff = (1.0 + r2 / im.sid_mm ** 2) ** -1.5
    field = _field_mask(im, xr[None, :], yr[:, None], 1.0 / im.spacing_mm)
    i0 = (n0 * heel[:, None] * falloff * field).astype(np.float32)
    return i0 * np.exp(-P / (1.0 + im.beam_hardening * P)), field


def _scatter(primary, P, im: ImagingParams, grid: _Grid, in_body) -> np.ndarray:
    """Scatter on the render grid: made where the beam interacts (primary x attenuation,
    mid-depth), spread by a wide kernel, scaled to the acquisition's scatter-to-primary
    ratio over the body."""
    h, w = grid.shape
    q = max(1, int(round(3.0 / grid.mm)))
    p_eff = P / (1.0 + im.beam_hardening * P)
    source = _downsample_mean(primary * np.exp(0.5 * p_eff) * p_eff, q)  # i0 * p * exp(-p / 2)
    spread = np.maximum(gaussian_blur(source, (25.0 / (grid.mm * q),) * 2), 0.0)  # no ringing below 0
    spread = upsample(spread.astype(np.float32), q, (h, w))
    if not in_body.any():
        return np.zeros((h, w), dtype=np.float32)
    gain = im.scatter_fraction * float(primary[in_body].mean()) / max(float(spread[in_body].mean()), 1e-9)
    return (gain * spread).astype(np.float32)


def _dense_objects(knee: Knee, im: ImagingParams, grid: _Grid, mu: dict):
    """Attenuation (H, W) of implants, cement, marker and ball at the output resolution,
    and the metal mask (H, W)."""
    H, W = im.size
    extra = np.zeros((H, W), dtype=np.float32)
    metal = np.zeros((H, W), dtype=bool)
    patches = []
    for name, comp in knee.components.items():
        displaced = mu["muscle"] if comp.material in ("PE", "cement") else 0.0
        patch = _component_patch(knee, name, grid, mu[comp.material] - displaced)
        patches.append(patch)
        if patch is not None and comp.material in ("CoCr", "Ti"):
            (x0, y0, bw, bh), values = patch
            metal[y0:y0 + bh, x0:x0 + bw] |= values > 1.0
    if im.marker is not None:
        patches.append(_marker_patch(im.marker, grid, mu))
    if im.ball is not None:
        patches.append(_ball_patch(im.ball, grid, mu))
    for patch in patches:
        if patch is not None:
            (x0, y0, bw, bh), values = patch
            extra[y0:y0 + bh, x0:x0 + bw] += values
    return extra, metal


def _with_dense_objects(log_r, expected, extra, metal, box, f: int, n0: float):
    """Put the dense objects into the render-grid log image (in place, whole render pixels
    inside the image) and return their render-grid masks (metal, any dense object grown
    by one pixel)."""
    h, w = log_r.shape
    metal_r = np.zeros((h, w), dtype=bool)
    dense_r = np.zeros((h, w), dtype=bool)
    if box is None:
        return metal_r, dense_r
    H, W = expected.shape
    y0, y1, x0, x1 = box
    y0, x0 = (y0 // f) * f, (x0 // f) * f
    y1, x1 = min(-(-y1 // f) * f, (H // f) * f), min(-(-x1 // f) * f, (W // f) * f)
    if y1 <= y0 or x1 <= x0:
        return metal_r, dense_r
    rows, cols = (y1 - y0) // f, (x1 - x0) // f
    target = (slice(y0 // f, y1 // f), slice(x0 // f, x1 // f))
    mean = expected[y0:y1, x0:x1].reshape(rows, f, cols, f).mean(axis=(1, 3))
    log_r[target] = np.float32(np.log(n0)) - np.log(np.maximum(mean, 0.5))
    metal_r[target] = metal[y0:y1, x0:x1].reshape(rows, f, cols, f).any(axis=(1, 3))
    dense_r[target] = (extra[y0:y1, x0:x1] > 0.02).reshape(rows, f, cols, f).any(axis=(1, 3))
    return metal_r, _dilate(dense_r)


def _processing(log_r, im: ImagingParams, grid: _Grid, field_open, in_body, bone_mask, metal_r, dense_r):
    """DR console processing on the render grid: (correction (h, w) added to the log image,
    window low, window high)."""
    h, w = grid.shape
    qe = max(1, int(round(2.0 / grid.mm)))
    # equalisation ignores how dense metal is (consoles segment implants first), else it
    # would pull the implants down to bone grey
    level = log_r
    if metal_r.any() and (bone_mask & ~metal_r).any():
        level = np.where(metal_r, np.minimum(log_r, np.percentile(log_r[bone_mask & ~metal_r], 99.5)), log_r)
    big = upsample(gaussian_blur(_downsample_mean(level, qe), (im.equalisation_sigma_mm / (grid.mm * qe),) * 2)
                   .astype(np.float32), qe, (h, w))
    mean_body = float(log_r[in_body & field_open].mean()) if (in_body & field_open).any() else 0.0
    detail = log_r - gaussian_blur(log_r, (im.detail_sigma_mm / grid.mm,) * 2)
    correction = (-im.equalisation * (big - mean_body) + im.detail_gain * detail).astype(np.float32)
    # window as a DR console sets it from the histogram: median soft tissue and the bone's
    # high percentile go to chosen display levels; air falls to black, metal saturates
    processed = log_r + correction
    soft = in_body & field_open & ~bone_mask & ~dense_r
    hard = bone_mask & field_open & ~dense_r
    l_soft = float(np.median(processed[soft][::3])) if soft.any() else float(processed.min())
    l_bone = float(np.percentile(processed[hard][::3], im.bone_pct)) if hard.any() else float(processed.max())
    slope = (im.bone_level - im.soft_level) / max(l_bone - l_soft, 1e-3)
    lo = l_soft - im.soft_level / slope
    return correction, lo, lo + 1.0 / slope


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3 x 3 binary dilation."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def _nonzero_box(extra: np.ndarray):
    """(y0, y1, x0, x1) bounding the nonzero pixels, or None."""
    rows = np.flatnonzero(extra.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(extra.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _binomial(image: np.ndarray) -> np.ndarray:
    """[1 2 1] / 4 blur in x and y (detector blur; edge rows and columns kept)."""
    out = image.copy()
    for axis in (0, 1):
        a = np.moveaxis(out, axis, 0)
        b = a.copy()
        b[1:-1] = 0.25 * a[:-2] + 0.5 * a[1:-1] + 0.25 * a[2:]
        a[...] = b
    return out


@lru_cache(maxsize=64)
def _tone_lut(gamma: float, s_curve: float, bits: int) -> np.ndarray:
    t = np.arange(65536, dtype=np.float64) / 65535.0
    t = t ** gamma
    t = (1.0 - s_curve) * t + s_curve * t * t * (3.0 - 2.0 * t)
    lut = np.round(t * ((1 << bits) - 1)).astype(np.uint16)
    lut.flags.writeable = False
    return lut


def _burn_text(display: np.ndarray, item: dict, maxval: int) -> None:
    alpha = glyphs(item["text"], item["height_px"])
    H, W = display.shape
    x0, y0 = int(round(item["origin"][0])), int(round(item["origin"][1]))
    gh, gw = alpha.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + gw, W), min(y0 + gh, H)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    a = alpha[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    region = display[cy0:cy1, cx0:cx1]
    region[...] = np.maximum(region, np.round(a * maxval).astype(np.uint16))
