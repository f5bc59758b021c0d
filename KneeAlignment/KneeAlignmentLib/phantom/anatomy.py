"""Anatomy of the phantom: bone outlines in their own frames, built from the schema template.

Every bone lives in its own frame (millimetres, right knee, the radiological view):
u = x towards the medial side, v = y distal, and the bone's shaft axis is the line u = 0.
The femur's frame is the knee frame; the tibia (with the fibula) is posed on it by
:mod:`.joint`.

How an outline is made (femur; the tibia is the same with plateau widths):

1. The epiphysis (epicondyles, condyles, notch) is a centripetal Catmull-Rom spline
   through the template points of the schema (``template_mm``), then deformed by the
   case's parameters: size, width, condylar heights, notch depth and width, spine height
   (the tibia's spines are also rounded), plateau concavity, and joint-line obliquity (a
   shear, as the template itself was made, iterated until the outline's aLDFA / MPTA
   is the target).
2. Anchors defined by a property are found on the deformed outline by that property:
   an epicondyle is the most lateral (medial) point, a condyle's distal point the most
   distal one along the shaft axis, the notch point the most proximal point of the
   notch, a spine tip the most proximal point of its spine, FNT00/FNT08 lie 4 mm above
   the notch margins, TSP00/TSP06 half way up the spines, FLK00/FMK00 one seventh of the
   arc from the epicondyle to the distal point. Anchors defined as anatomical corners
   (notch margins, plateau margins, spine bases) are material points of the template,
   carried along by the deformation. Osteophytes (OA) are added afterwards, away from
   the extremal anchors: a reader measures the bone, not its spurs.
3. The diaphysis is then drawn to the schema's definition: straight cortices, symmetric
   about the axis, with the proximal anchor 1.5 and the diaphysis-end anchor 0.75
   epicondylar widths above the joint line (the mean level of the two distal condylar
   points); the metaphyseal flare is a cubic curve from the diaphysis end to the
   epicondyle that leaves the shaft tangentially and meets the epicondyle vertically,
   so the epicondyle stays the most lateral point.

Because the shaft cortices are straight and symmetric, every midpoint of a paired
cortex landmark lies exactly on the axis u = 0: the FTS axis of the landmarks IS the
construction axis, which is what makes the aTFA truth exact.

Shape legend: outlines and polygons are (M, 2) as (u, v) mm in the bone's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..schema import load_schema
from .outline import Chain, arc_length, bezier, catmull_rom, smoothstep
from .raster import half_widths

__all__ = ["AnatomyParams", "Bone", "sample_anatomy", "build_femur", "build_tibia", "build_fibula",
           "build_patella", "build_trochlea", "template_points"]

_SPLINE = 24  # spline vertices per template interval (~0.1-0.2 mm apart)
_FAR = 600.0  # mm: how far shafts extend beyond their end anchors (well outside any image)
FNT_ABOVE_MARGIN_MM = 4.0  # FNT00/FNT08: "4 mm above its margin"


def template_points(names) -> np.ndarray:
    """(N, 2) template positions (mm) of the named landmarks (post-op schema holds all)."""
    schema = load_schema("postop")
    return schema.template_mm[schema.indices(names)]


def _template_chain(names: list[str], tags: dict[str, str] | None = None) -> Chain:
    """Spline through the named template points; each point is anchored as ``name~``
    (a material reference point) plus any extra name in ``tags`` (name -> anchor name)."""
    pts = catmull_rom(template_points(names), _SPLINE)
    anchors = {f"{n}~": i * _SPLINE for i, n in enumerate(names)}
    for name, anchor in (tags or {}).items():
        anchors[anchor] = names.index(name) * _SPLINE
    return Chain(pts, anchors)


def _outward_normals(points: np.ndarray, interior) -> np.ndarray:
    """(M, 2) unit normals of a polyline, on the side away from the point ``interior``."""
    tangent = np.gradient(points, axis=0)
    tangent /= np.maximum(np.hypot(*tangent.T), 1e-12)[:, None]
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    flip = np.sum((points - interior) * normal, axis=1) < 0
    normal[flip] *= -1
    return normal


def _bumps(chain: Chain, sites, interior) -> np.ndarray:
    """Displacement (M, 2) of Gaussian bumps along the chain's arc length.

    ``sites``: iterable of (anchor name, offset along the arc in mm, amplitude mm,
    width mm, direction (2,) or None for the outward normal). Used for osteophytes:
    marginal spurs that lengthen the outline.
    """
    s = arc_length(chain.points)
    normal = _outward_normals(chain.points, interior)
    out = np.zeros_like(chain.points)
    for anchor, offset, amplitude, width, direction in sites:
        if amplitude <= 0:
            continue
        s0 = s[chain.anchors[anchor]] + offset
        towards = normal if direction is None else np.asarray(direction, float) / np.hypot(*direction)
        out += (amplitude * np.exp(-0.5 * ((s - s0) / width) ** 2))[:, None] * towards
    return out


def _smooth_along(points: np.ndarray, sigma_vertices: float, weight: np.ndarray) -> np.ndarray:
    """Gaussian smoothing along the polyline, blended in where ``weight`` (M,) is 1."""
    r = int(3 * sigma_vertices)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_vertices) ** 2)
    k /= k.sum()
    padded = np.pad(points, ((r, r), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(padded[:, i], k, mode="valid") for i in (0, 1)], axis=1)
    return points + weight[:, None] * (smooth - points)


def _shear(points: np.ndarray, tan_angle: float, weight: np.ndarray) -> np.ndarray:
    """Joint-line obliquity: v += tan * u * weight (medial end distal for tan > 0)."""
    out = points.copy()
    out[:, 1] = points[:, 1] + tan_angle * points[:, 0] * weight
    return out


def _line_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle of the line a -> b (a lateral, b medial), medial end distal positive."""
    d = b - a
    return float(np.degrees(np.arctan2(d[1], d[0])))


# ----------------------------------------------------------------------------- params


@dataclass(frozen=True)
class AnatomyParams:
    """One knee's anatomy (mm, degrees). Sampled by :func:`sample_anatomy`."""

    scale: float                 # overall size (1 = template)
    epiphysis_width: float       # ML width factor of both bone ends
    femur_shaft_half_mm: float   # femoral cortex half-width at the diaphysis end
    femur_cortex_ratio: float    # femoral diaphyseal cortex thickness / shaft half-width
    tibia_shaft_half_mm: float
    tibia_cortex_ratio: float
    condyle_drop_lat_mm: float   # extra distal length of the lateral condyle
    condyle_drop_med_mm: float
    notch_depth_mm: float        # roof raised (+) or lowered (-)
    notch_width: float           # factor
    plateau_concavity_mm: float  # medial plateau dished deeper (+)
    spine_height: float          # factor on the spines' height
    aldfa_deg: float             # target anatomical lateral distal femoral angle
    mpta_deg: float              # target medial proximal tibial angle
    kl_grade: int                # Kellgren-Lawrence grade 0-4
    narrow_side: str             # 'medial' or 'lateral': the compartment OA narrows
    osteophyte_mm: float         # marginal osteophyte size (0 without OA)
    sclerosis: float             # subchondral sclerosis 0..1
    fibula_drop_mm: float        # fibula lower (+) than the template
    fibula_tilt_deg: float
    fibula_head: float           # head size factor
    patella_size: float
    patella_height_mm: float     # patella centre above the joint line
    patella_shift_mm: float      # lateral (-) / medial (+) shift of the patella
    patella_tilt_deg: float
    leg_rotation_deg: float      # external (+) / internal (-) rotation of the leg
    flexion_deg: float
    plateau_tilt_deg: float      # posterior slope minus tibial tilt: separates the plateau rims
    osteoporosis: float          # 0..1: thinner cortices, sparser trabeculae
    fat_mm: float                # subcutaneous fat thickness at the knee
    soft_lat_mm: float           # skin beyond the bone at the joint, lateral / medial
    soft_med_mm: float
    thigh_gain: float            # thigh widening per mm above the knee
    calf_mm: float               # calf bulge below the knee
    limb_ap_ratio: float         # AP thickness / ML width of the limb
    skin_wobble_mm: float        # low-frequency irregularity of the skin contour
    skin_phase: float
    physis_femur: float          # density of the physeal scars (0: none)
    physis_tibia: float
    physis_phase: float
    cortex_wave: tuple           # (amplitude, wavelength mm, phase, eccentricity) of each shaft's cortex


def sample_anatomy(rng: np.random.Generator, kind: str, atfa_deg: float, jlca_deg: float,
                   kl: int) -> AnatomyParams:
    """Draw an anatomy (OA grade ``kl``) whose joint-line angles fit ``atfa_deg`` and ``jlca_deg``.

    aTFA = MPTA - aLDFA - JLCA (the identity of :mod:`..geometry`): the deviation of
    aTFA + JLCA from a normal knee's MPTA - aLDFA is split between the bones.
    """
    def clipped(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    scale = clipped(1.0, 0.07, 0.84, 1.18)
    aldfa0, mpta0 = clipped(81.0, 1.6, 77.0, 85.0), clipped(87.0, 1.6, 83.0, 91.0)
    excess = (atfa_deg + jlca_deg) - (mpta0 - aldfa0)
    w = rng.uniform(0.3, 0.7)
    narrow = "medial" if jlca_deg > 0 or (jlca_deg == 0 and atfa_deg < 5) else "lateral"
    osteo = 0.0 if kl == 0 else float(rng.uniform(*[(0, 0), (0.3, 1.5), (1.0, 3.0), (2.0, 4.5), (3.0, 6.5)][kl]))
    return AnatomyParams(
        scale=scale,
        epiphysis_width=clipped(1.0, 0.035, 0.92, 1.08),
        # shaft widths 60-140 mm from the joint line as on real films: femur 29.9 +- 2.7 mm,
        # tibia 23.2 +- 3.2 mm (../shared/real-films.md)
        femur_shaft_half_mm=15.0 * scale * clipped(1.0, 0.055, 0.85, 1.18),
        femur_cortex_ratio=float(rng.uniform(0.27, 0.40)),
        tibia_shaft_half_mm=11.6 * scale * clipped(1.0, 0.115, 0.8, 1.4),
        tibia_cortex_ratio=float(rng.uniform(0.25, 0.38)),
        condyle_drop_lat_mm=clipped(0.0, 0.8, -2.0, 2.0),
        condyle_drop_med_mm=clipped(0.0, 0.8, -2.0, 2.0),
        notch_depth_mm=clipped(0.0, 1.5, -3.0, 3.5),
        notch_width=clipped(1.0, 0.08, 0.82, 1.2),
        plateau_concavity_mm=clipped(0.4, 0.5, -0.5, 1.6),
        spine_height=clipped(1.0 + 0.08 * kl, 0.15, 0.6, 1.5),
        aldfa_deg=float(np.clip(aldfa0 - (1 - w) * excess, 68.0, 95.0)),
        mpta_deg=float(np.clip(mpta0 + w * excess, 76.0, 100.0)),
        kl_grade=kl,
        narrow_side=narrow,
        osteophyte_mm=osteo,
        sclerosis=0.0 if kl < 2 else float(rng.uniform(0.2, 0.35 * kl)),
        fibula_drop_mm=clipped(0.0, 2.5, -5.0, 6.0),
        fibula_tilt_deg=clipped(0.0, 1.2, -3.0, 3.0),
        fibula_head=clipped(1.0, 0.08, 0.8, 1.2),
        patella_size=clipped(1.0, 0.07, 0.85, 1.15),
        patella_height_mm=clipped(33.0, 5.0, 20.0, 48.0),
        patella_shift_mm=clipped(-3.0, 3.0, -12.0, 6.0),
        patella_tilt_deg=clipped(0.0, 5.0, -12.0, 12.0),
        leg_rotation_deg=clipped(0.0, 6.0, -15.0, 15.0),
        flexion_deg=float(min(abs(rng.normal(0.0, 6.0)), 15.0)),
        plateau_tilt_deg=clipped(3.0, 2.5, -3.0, 9.0),
        osteoporosis=float(rng.beta(1.5, 4.0)),
        fat_mm=float(np.exp(rng.uniform(np.log(4.0), np.log(30.0)))),
        soft_lat_mm=float(rng.uniform(10.0, 22.0)),
        soft_med_mm=float(rng.uniform(14.0, 30.0)),
        thigh_gain=float(rng.uniform(0.06, 0.2)),
        calf_mm=float(rng.uniform(5.0, 30.0)),
        limb_ap_ratio=float(rng.uniform(0.85, 1.1)),
        skin_wobble_mm=float(rng.uniform(0.0, 4.0)),
        skin_phase=float(rng.uniform(0.0, 2 * np.pi)),
        physis_femur=float(rng.uniform(0.0, 0.35) * (rng.random() < 0.75)),
        physis_tibia=float(rng.uniform(0.0, 0.35) * (rng.random() < 0.75)),
        physis_phase=float(rng.uniform(0.0, 2 * np.pi)),
        cortex_wave=(float(rng.uniform(0.05, 0.2)), float(rng.uniform(25.0, 70.0)), float(rng.uniform(0, 2 * np.pi)),
                     float(rng.uniform(-0.3, 0.3))),
    )


# ------------------------------------------------------------------------------- bones


@dataclass(frozen=True, eq=False)
class Bone:
    """One bone's outline in its own frame and the 3D profile its solid is built with.

    ``chain``: the open outline with every schema anchor of the bone (ends far outside).
    ``polygon``: (M, 2) the closed outline the solid fills.
    ``levels``: named v levels (mm) used by the profiles (joint line, diaphysis end, ...).
    ``profile``: dict of (L,) tables over ``profile['v']``: half_depth (AP half-thickness
    of the bone), falloff (radius over which the chord rises from the outline: the local
    half-width, capped at the bone ends), cortex (shell thickness), marrow (fraction of
    the interior that is fatty marrow rather than cancellous bone), density (factor on
    the cancellous attenuation).
    """

    name: str
    chain: Chain
    polygon: np.ndarray
    levels: dict
    profile: dict


def _shaft_and_flare(side: int, epi: np.ndarray, h_end: float, v_end: float, h_far: float, v_far: float,
                     direction: int, rng_shape: tuple[float, float]) -> np.ndarray:
    """Outline from far along the shaft to the epicondyle (or tibial condyle) point ``epi``.

    ``side``: -1 lateral, +1 medial. The shaft is the straight line through
    (side*h_far, v_far) and (side*h_end, v_end); the flare leaves it tangentially at the
    diaphysis end and reaches ``epi`` vertically. ``direction``: +1 if ``epi`` lies distal
    of the diaphysis end (femur), -1 if proximal (tibia). Returns (M, 2), far end first.
    """
    far = np.array([side * h_far, v_far])
    end = np.array([side * h_end, v_end])
    along = (end - far) / np.linalg.norm(end - far)
    gap = abs(epi[1] - v_end)
    f1, f2 = rng_shape
    flare = bezier(end, end + along * f1 * gap, epi - np.array([0.0, direction * f2 * gap]), epi, 400)
    return np.concatenate([far[None], flare])


def _profile_table(polygon, v_lo, v_hi, step, spec) -> dict:
    v = np.arange(v_lo, v_hi + step, step)
    table = {"v": v}
    half = half_widths(polygon, v)
    table["half_width"] = half
    table.update({k: fn(v, half) for k, fn in spec.items()})
    return table


def build_femur(p: AnatomyParams) -> Bone:
    """The femur outline (FLC, FLK, FNT, FMK, FMC anchors) and its solid profile."""
    names = (["FLC13", "FLC14", "FLC15"] + [f"FLK{i:02d}" for i in range(14)] + [f"FNT{i:02d}" for i in range(9)]
             + [f"FMK{i:02d}" for i in range(13, -1, -1)] + ["FMC15", "FMC14", "FMC13"])
    chain = _template_chain(names, {"FLK13": "FLK13", "FMK13": "FMK13"})
    u0, v0 = chain.points[:, 0].copy(), chain.points[:, 1].copy()
    s = p.scale
    pts = chain.points.copy()

    # condylar lengths (each lobe's distal part), notch depth and width
    lat, med = smoothstep(u0, -4.0, -12.0), smoothstep(u0, 4.0, 12.0)
    distal = smoothstep(v0, -22.0, -4.0)
    pts[:, 1] += (p.condyle_drop_lat_mm * lat + p.condyle_drop_med_mm * med) * distal
    roof = smoothstep(v0, -11.0, -22.0) * smoothstep(np.abs(u0), 12.0, 6.0)
    notch_depth = p.notch_depth_mm + 0.12 * p.flexion_deg  # a flexed knee shows a deeper notch
    pts[:, 1] -= notch_depth * roof
    walls = smoothstep(np.abs(u0), 15.0, 10.0) * smoothstep(v0, -3.0, -9.0)
    pts[:, 0] += (p.notch_width - 1.0) * u0 * walls
    pts[:, 0] *= p.epiphysis_width
    pts *= s
    # flexion foreshortens the epiphysis along the shaft (beam no longer perpendicular)
    pts[:, 1] *= np.cos(np.radians(0.5 * p.flexion_deg))
    chain.points = pts

    # joint-line obliquity: shear the distal femur until the condylar line gives aLDFA
    base, marks = chain.points.copy(), dict(chain.anchors)
    weight = smoothstep(base[:, 1], -60.0 * s, -25.0 * s)
    tan = 0.0
    for _ in range(3):
        trial = Chain(_shear(base, tan, weight), dict(marks))
        _femur_anchors(trial)
        current = 90.0 - _line_angle_deg(trial["FLK06"], trial["FMK06"])  # aLDFA of the outline
        tan = np.tan(np.arctan(tan) + np.radians(current - p.aldfa_deg))
    chain = Chain(_shear(base, tan, weight), dict(marks))
    _femur_anchors(chain)
    # osteophytes: spurs at the condyles' outer articular margins (OA). Anchors were found
    # on the bone without them, as a reader measures the bone, not its spurs.
    if p.osteophyte_mm > 0:
        big = {"medial": (1.0, 0.6), "lateral": (0.6, 1.0)}[p.narrow_side]
        a = p.osteophyte_mm
        chain.points = chain.points + _bumps(chain, [
            ("FLK03~", 0.0, a * big[1], 1.4 + 0.2 * a, None), ("FMK03~", 0.0, a * big[0], 1.4 + 0.2 * a, None),
        ], interior=np.array([0.0, -40.0 * s]))
    chain.cut("FLC15", "FMC15")

    # diaphysis by the schema's rule, flare to the epicondyles
    ew = chain["FMC15"][0] - chain["FLC15"][0]
    v_joint = 0.5 * (chain["FLK06"][1] + chain["FMK06"][1])
    v_prox, v_end = v_joint - 1.5 * ew, v_joint - 0.75 * ew
    h_end = p.femur_shaft_half_mm
    h_prox = h_end * (15.0 / 15.5)
    v_far = v_prox - _FAR
    h_far = h_end + (h_prox - h_end) * (v_far - v_end) / (v_prox - v_end)
    flare = (0.47, 0.47)
    lateral = _shaft_and_flare(-1, chain["FLC15"], h_end, v_end, h_far, v_far, +1, flare)
    medial = _shaft_and_flare(+1, chain["FMC15"], h_end, v_end, h_far, v_far, +1, flare)
    full = _assemble(lateral, chain, medial)
    for side, code in ((-1, "FLC"), (+1, "FMC")):
        full.at_level(f"{code}00", f"{code}_far", f"{code}15", v_prox)
        full.anchors[f"{code}07"] = _vertex_at(full, np.array([side * h_end, v_end]))
    # FLK00/FMK00: first of 7 equal steps from the epicondyle to the distal point
    for code, epi in (("FLK", "FLC15"), ("FMK", "FMC15")):
        _at_fraction(full, f"{code}00", epi, f"{code}06", 1.0 / 7.0)

    polygon = _closed(full)
    t_shaft = p.femur_cortex_ratio * h_end * (1.0 - 0.45 * p.osteoporosis)
    depth_condyle = 0.39 * ew
    levels = {"joint": v_joint, "diaphysis_end": v_end, "proximal": v_prox, "ew": ew,
              "physis": (v_joint - 21.0 * s, p.physis_femur, -5.0, p.physis_phase)}
    density = 1.0 - 0.35 * p.osteoporosis
    profile = _profile_table(polygon, v_prox - 150, v_joint + 40, 0.5, {
        "half_depth": lambda v, hw: (0.95 * h_end + (depth_condyle - 0.95 * h_end)
                                     * smoothstep(v, v_end + 5, v_joint - 28)),
        "falloff": lambda v, hw: np.clip(np.minimum(hw, 0.42 * ew), 2.0, None),
        "cortex": lambda v, hw: (0.7 + (t_shaft - 0.7) * smoothstep(v, v_end + 30, v_end - 25)
                                 + 0.9 * smoothstep(v, v_joint - 14, v_joint - 3)),  # subchondral plate
        "marrow": lambda v, hw: smoothstep(v, v_end + 12, v_end - 35),
        "density": lambda v, hw: density * (1.0 + 0.25 * smoothstep(v, v_joint - 25, v_joint - 5)),
    })
    return Bone("femur", full, polygon, levels, profile)


def _femur_anchors(chain: Chain) -> None:
    """Anchors of the femoral epiphysis found by their definitions (in place)."""
    chain.extremal("FLC15", "FLC13~", "FLK06~", (-1.0, 0.0))
    chain.extremal("FMC15", "FMK06~", "FMC13~", (1.0, 0.0))
    chain.extremal("FLK06", "FLC15", "FLK13", (0.0, 1.0))
    chain.extremal("FMK06", "FMK13", "FMC15", (0.0, 1.0))
    chain.extremal("FNT04", "FLK13", "FMK13", (0.0, -1.0))
    for name in ("FNT00", "FNT08"):
        chain.anchors.pop(name, None)
    chain.at_level("FNT00", "FLK13", "FNT04", chain["FLK13"][1] - FNT_ABOVE_MARGIN_MM)
    chain.at_level("FNT08", "FMK13", "FNT04", chain["FMK13"][1] - FNT_ABOVE_MARGIN_MM)


def build_tibia(p: AnatomyParams) -> Bone:
    """The tibia outline (TLC, TLP, TSP, TMP, TMC anchors) and its solid profile."""
    names = (["TLC11", "TLC12", "TLC13"] + [f"TLP{i:02d}" for i in range(8)] + [f"TSP{i:02d}" for i in range(7)]
             + [f"TMP{i:02d}" for i in range(7, -1, -1)] + ["TMC13", "TMC12", "TMC11"])
    tags = {n: n for n in ("TLP00", "TLP07", "TMP07", "TMP00")}
    chain = _template_chain(names, tags)
    v0 = chain.points[:, 1].copy()
    s = p.scale
    pts = chain.points.copy()
    idx = np.arange(len(pts))
    i_sp0, i_sp1 = chain.anchors["TLP07~"], chain.anchors["TMP07~"]
    i_mp0, i_mp1 = chain.anchors["TMP07~"], chain.anchors["TMP00~"]
    # spines: rounded (the template draws them as a polyline) and scaled in height about their bases
    spine = smoothstep(idx, i_sp0 - 6, i_sp0 + 6) * smoothstep(idx, i_sp1 + 6, i_sp1 - 6)
    pts = _smooth_along(pts, 14.0, spine)
    v0 = pts[:, 1].copy()
    base_v = 0.5 * (chain["TLP07~"][1] + chain["TMP07~"][1])
    pts[:, 1] += (p.spine_height - 1.0) * (v0 - base_v) * spine
    # medial plateau concavity
    t = np.clip((idx - i_mp0) / (i_mp1 - i_mp0), 0.0, 1.0)
    pts[:, 1] += p.plateau_concavity_mm * np.sin(np.pi * t) * (idx >= i_mp0) * (idx <= i_mp1)
    pts[:, 0] *= p.epiphysis_width
    pts *= s
    chain.points = pts

    # joint-line obliquity from the plateau margins (material points): exact in one step
    base = chain.points.copy()
    weight = smoothstep(base[:, 1], 50.0 * s, 15.0 * s)
    lat, med = base[chain.anchors["TLP00"]], base[chain.anchors["TMP00"]]
    tan = np.tan(np.radians(90.0 - p.mpta_deg)) - (med[1] - lat[1]) / (med[0] - lat[0])
    chain.points = _shear(base, tan, weight)
    _tibia_anchors(chain)
    if p.osteophyte_mm > 0:  # marginal lipping at the plateau corners (OA)
        big = {"medial": (1.0, 0.6), "lateral": (0.6, 1.0)}[p.narrow_side]
        a = p.osteophyte_mm
        chain.points = chain.points + _bumps(chain, [
            # lipping: the plateau's margin grows outwards and a little downwards
            ("TLP00", -2.0, a * big[1], 1.4 + 0.2 * a, (-1.0, 0.35)),
            ("TMP00", 2.0, a * big[0], 1.4 + 0.2 * a, (1.0, 0.35)),
        ], interior=np.array([0.0, 40.0 * s]))
    chain.cut("TLC13", "TMC13")

    pw = chain["TMC13"][0] - chain["TLC13"][0]
    v_joint = 0.5 * (chain["TLP00"][1] + chain["TMP00"][1])
    v_dist, v_end = v_joint + 1.5 * pw, v_joint + 0.75 * pw
    h_end = p.tibia_shaft_half_mm
    h_dist = h_end * (14.0 / 14.5)
    v_far = v_dist + _FAR
    h_far = h_end + (h_dist - h_end) * (v_far - v_end) / (v_dist - v_end)
    lateral = _shaft_and_flare(-1, chain["TLC13"], h_end, v_end, h_far, v_far, -1, (0.5, 0.45))
    medial = _shaft_and_flare(+1, chain["TMC13"], h_end, v_end, h_far, v_far, -1, (0.5, 0.45))
    full = _assemble(lateral, chain, medial, codes=("TLC", "TMC"), epi=("TLC13", "TMC13"))
    for side, code in ((-1, "TLC"), (+1, "TMC")):
        full.at_level(f"{code}00", f"{code}_far", f"{code}13", v_dist)
        full.anchors[f"{code}06"] = _vertex_at(full, np.array([side * h_end, v_end]))

    polygon = _closed(full)
    t_shaft = p.tibia_cortex_ratio * h_end * (1.0 - 0.45 * p.osteoporosis)
    depth_plateau = 0.31 * pw
    levels = {"joint": v_joint, "diaphysis_end": v_end, "distal": v_dist, "pw": pw,
              "physis": (v_joint + 17.0 * s, p.physis_tibia, 3.0, p.physis_phase + 1.0)}
    density = 1.0 - 0.35 * p.osteoporosis
    profile = _profile_table(polygon, v_joint - 40, v_dist + 150, 0.5, {
        "half_depth": lambda v, hw: (0.95 * h_end + (depth_plateau - 0.95 * h_end)
                                     * smoothstep(v, v_end - 5, v_joint + 25)),
        "falloff": lambda v, hw: np.clip(np.minimum(hw, 0.42 * pw), 2.0, None),
        "cortex": lambda v, hw: (0.7 + (t_shaft - 0.7) * smoothstep(v, v_end - 30, v_end + 25)
                                 + 0.7 * smoothstep(v, v_joint + 10, v_joint + 2)),
        "marrow": lambda v, hw: smoothstep(v, v_end - 12, v_end + 35),
        "density": lambda v, hw: density * (1.0 + 0.3 * smoothstep(v, v_joint + 20, v_joint + 3)),
    })
    return Bone("tibia", full, polygon, levels, profile)


def _tibia_anchors(chain: Chain) -> None:
    chain.extremal("TLC13", "TLC11~", "TLP00", (-1.0, 0.0))
    chain.extremal("TMC13", "TMP00", "TMC11~", (1.0, 0.0))
    chain.extremal("TSP01", "TLP07", "TSP03~", (0.0, -1.0))
    chain.extremal("TSP05", "TSP03~", "TMP07", (0.0, -1.0))
    chain.extremal("TSP03", "TSP01", "TSP05", (0.0, 1.0))
    chain.at_level("TSP00", "TLP07", "TSP01", 0.5 * (chain["TLP07"][1] + chain["TSP01"][1]))
    chain.at_level("TSP06", "TMP07", "TSP05", 0.5 * (chain["TMP07"][1] + chain["TSP05"][1]))


def build_fibula(p: AnatomyParams, tibia: Bone) -> Bone:
    """The fibula (FIB anchors) in the tibia's frame, lateral to it.

    Its lateral and medial shaft borders are straight; FIB00/FIB13 lie on them at the
    tibia's distal level. Rotation of the leg moves the fibula (which is posterior)
    across the tibia: external rotation (+) increases their overlap.
    """
    s = p.scale
    head_names = [f"FIB{i:02d}" for i in range(3, 11)]
    head = _template_chain(head_names, {"FIB07": "FIB07", "FIB08": "FIB08"})
    pts = head.points.copy()
    centre = np.array([-39.0, 30.0])
    w = smoothstep(pts[:, 1], 58.0, 40.0)  # the head scales, the shaft joins unchanged
    pts = pts + ((p.fibula_head - 1.0) * (pts - centre)) * w[:, None]
    lat_dir = template_points(["FIB03"])[0] - template_points(["FIB00"])[0]
    med_dir = template_points(["FIB10"])[0] - template_points(["FIB13"])[0]
    far_lat = pts[0] - lat_dir / np.linalg.norm(lat_dir) * (_FAR + 100.0)
    far_med = pts[-1] - med_dir / np.linalg.norm(med_dir) * (_FAR + 100.0)
    pts = np.concatenate([far_lat[None], pts, far_med[None]])
    anchors = {k: i + 1 for k, i in head.anchors.items()}
    anchors.update({"FIB_far_lat": 0, "FIB_far_med": len(pts) - 1})
    chain = Chain(pts * s, anchors)
    # leg rotation swings the posterior fibula across the tibia; small tilt and drop
    shift = np.array([24.0 * s * np.sin(np.radians(p.leg_rotation_deg)), p.fibula_drop_mm])
    pivot = chain["FIB07"]
    t = np.radians(p.fibula_tilt_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    chain.points = (chain.points - pivot) @ rot.T + pivot + shift
    chain.extremal("FIB05", "FIB03~", "FIB07", (-1.0, 0.0))
    chain.extremal("FIB06", "FIB05", "FIB07", (0.0, -1.0))
    v_dist = tibia.levels["distal"]
    chain.at_level("FIB00", "FIB_far_lat", "FIB05", v_dist)
    chain.at_level("FIB13", "FIB_far_med", "FIB08", v_dist)
    polygon = chain.points  # closed by the far segment between the two shaft ends
    v_head = chain["FIB06"][1]
    profile = _profile_table(polygon, v_head - 5, v_dist + 150, 0.5, {
        "half_depth": lambda v, hw: 5.0 * s + 6.0 * s * smoothstep(v, v_head + 40 * s, v_head + 10 * s),
        "falloff": lambda v, hw: np.clip(np.minimum(hw, 7.0 * s), 1.0, None),
        "cortex": lambda v, hw: 0.7 + 1.1 * s * smoothstep(v, v_head + 25 * s, v_head + 60 * s),
        "marrow": lambda v, hw: smoothstep(v, v_head + 30 * s, v_head + 70 * s),
        "density": lambda v, hw: np.full_like(v, 1.0 - 0.3 * p.osteoporosis),
    })
    return Bone("fibula", chain, polygon, {"head": v_head}, profile)


def build_patella(p: AnatomyParams, femur: Bone, *, resurfaced: bool = False) -> Bone:
    """The patella in the femur's frame: an egg-shaped shell, apex distal, no landmarks.

    A resurfaced patella (post-op button) is thinner: its articular part was cut away.
    """
    s = p.scale * p.patella_size
    a, c = 21.0 * s, 23.5 * s
    t = np.linspace(0.0, 2 * np.pi, 241)[:-1]
    u = a * np.cos(t) * (1.0 - 0.24 * np.sin(t))  # rounded triangle, apex distal
    v = c * np.sin(t)
    tilt = np.radians(p.patella_tilt_deg)
    u, v = u * np.cos(tilt) - v * np.sin(tilt), u * np.sin(tilt) + v * np.cos(tilt)
    shift = -30.0 * p.scale * np.sin(np.radians(p.leg_rotation_deg))  # anterior: opposite the fibula
    centre = np.array([p.patella_shift_mm + shift,
                       femur.levels["joint"] - p.patella_height_mm * p.scale + 0.9 * p.flexion_deg])
    polygon = np.stack([u, v], axis=1) + centre
    half = (6.5 if resurfaced else 9.5) * s
    profile = _profile_table(polygon, centre[1] - c - 2, centre[1] + c + 2, 0.5, {
        "half_depth": lambda vv, hw: np.full_like(vv, half),
        "falloff": lambda vv, hw: np.clip(np.minimum(hw, 20.0 * s), 1.0, None),
        "cortex": lambda vv, hw: np.full_like(vv, 0.5),
        "marrow": lambda vv, hw: np.zeros_like(vv),
        "density": lambda vv, hw: np.full_like(vv, 1.0 - 0.3 * p.osteoporosis),
    })
    return Bone("patella", Chain(polygon, {}), polygon, {"centre_u": centre[0], "centre_v": centre[1]}, profile)


def build_trochlea(femur: Bone) -> Bone:
    """Bone in front of the intercondylar notch (trochlea), in the femur's frame.

    The notch is a tunnel open posteriorly and distally; rays through it still cross the
    anterior femur near the roof, less and less towards the notch's distal opening. This
    solid fills the notch outline (closed across its opening) with that thinning depth,
    so the notch is lucent but not empty, as on film. It adds no outline of its own: its
    walls are the femur's, and it fades out towards the opening.
    """
    chain = femur.chain
    notch = chain.points[chain.anchors["FLK13"]:chain.anchors["FMK13"] + 1]
    roof = float(chain["FNT04"][1])
    margin = 0.5 * float(chain["FLK13"][1] + chain["FMK13"][1])
    depth = 0.22 * femur.levels["ew"]
    profile = _profile_table(notch, roof - 2.0, margin + 8.0, 0.5, {
        "half_depth": lambda v, hw: depth * smoothstep(v, margin + 2.0, roof + 1.0),
        "falloff": lambda v, hw: np.full_like(v, 2.5),
        "cortex": lambda v, hw: np.zeros_like(v),
        "marrow": lambda v, hw: np.zeros_like(v),
        "density": lambda v, hw: np.interp(v, femur.profile["v"], femur.profile["density"]),
    })
    return Bone("trochlea", Chain(notch, {}), notch, dict(femur.levels), profile)


# ---------------------------------------------------------------------------- helpers


def _assemble(lateral: np.ndarray, epiphysis: Chain, medial: np.ndarray,
              codes=("FLC", "FMC"), epi=("FLC15", "FMC15")) -> Chain:
    """lateral (far -> epicondyle) + epiphysis (epicondyle -> epicondyle) + medial reversed."""
    left = Chain(lateral, {f"{codes[0]}_far": 0})
    right = Chain(medial[::-1].copy(), {f"{codes[1]}_far": len(medial) - 1})
    return left.join(epiphysis).join(right)


def _vertex_at(chain: Chain, point: np.ndarray) -> int:
    d = np.hypot(*(chain.points - point).T)
    i = int(np.argmin(d))
    if d[i] > 1e-9:
        raise ValueError("expected a vertex at the diaphysis end")
    return i


def _at_fraction(chain: Chain, name: str, first: str, last: str, fraction: float) -> None:
    """Insert anchor ``name`` at ``fraction`` of the arc from anchor ``first`` to ``last``."""
    i0, i1 = chain.anchors[first], chain.anchors[last]
    step = 1 if i1 > i0 else -1
    idx = np.arange(i0, i1 + step, step)
    s = arc_length(chain.points[idx])
    target = fraction * s[-1]
    k = int(np.searchsorted(s, target, side="right")) - 1
    k = min(k, len(idx) - 2)
    w = (target - s[k]) / (s[k + 1] - s[k])
    a, b = idx[k], idx[k + 1]
    point = chain.points[a] + w * (chain.points[b] - chain.points[a])
    chain.insert(max(a, b), point, name)


def _closed(chain: Chain) -> np.ndarray:
    """The chain as a closed polygon (the closing edge joins its two far ends)."""
    return chain.points.copy()
