"""The knee assembled: bones and implants posed together, landmarks, and the truth.

Knee frame: the femur's frame (mm, right knee, u medial, v distal, femoral shaft axis
u = 0). The tibia and everything fixed to it (fibula, tray, insert) is turned by the
construction's aTFA about a pivot (the tibial spine centre pre-op, the insert centre
post-op) and then moved until the joint closes: pre-op until the narrower compartment
has the joint-space width the OA grade asks for (and the spines clear the notch),
post-op until the femoral component rests on the insert.

Truth (all in degrees, valgus positive, as :func:`..geometry.compute_alignment`):

- ``atfa_fts_deg``: the construction angle itself, the rotation of the tibial frame
  against the femoral frame. The landmarks give it exactly because the shaft
  landmark midpoints lie on the frames' axes (see :mod:`.anatomy`).
- ``atfa_fnts_deg``: the angle between the construction's FNTS axes, defined as the
  schema defines them: femoral shaft centre (mean of the femoral shaft-centre
  midpoints, on the axis half way between the proximal and diaphysis-end levels) to
  the notch point FNT04; tibial spine centre (mean of the spine tips TSP01, TSP05) to
  the tibial shaft centre. It is evaluated on the construction's anchors, which are
  landmarks, so it equals compute_alignment's FNTS on the true points.
- ``alpha_deg``, ``beta_deg`` (post-op): the component angles the components were
  turned to (see :mod:`.postop`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..schema import LandmarkSchema, load_schema
from .anatomy import (AnatomyParams, Bone, build_femur, build_fibula, build_patella, build_tibia, build_trochlea,
                      sample_anatomy)
from .outline import Chain, arc_length, catmull_rom, smoothstep
from .postop import (Component, ImplantParams, atfa_deg, build_components, patella_pegs, resection_lines,
                     sample_implant)

__all__ = ["Pose", "Knee", "build_knee", "place_landmarks", "limb_outline", "JSW_BY_GRADE_MM"]

#: Joint-space width (mm) of the narrower compartment by Kellgren-Lawrence grade.
JSW_BY_GRADE_MM = ((4.5, 6.5), (3.5, 5.5), (2.2, 4.0), (0.8, 2.4), (0.15, 0.9))
SPINE_CLEARANCE_MM = 0.8

_BONE_OF = {"FLC": "femur", "FLK": "femur", "FNT": "femur", "FMK": "femur", "FMC": "femur",
            "TLC": "tibia", "TLP": "tibia", "TSP": "tibia", "TMP": "tibia", "TMC": "tibia", "FIB": "fibula",
            "CFL": "femoral", "CFB": "femoral", "CFM": "femoral",
            "CTS": "tray", "CTL": "tray", "CTK": "tray", "CTM": "tray", "CTI": "insert"}


@dataclass(frozen=True, eq=False)
class Pose:
    """Rigid 2D map p -> rot @ p + shift ((2, 2) rotation, (2,) mm)."""

    rot: np.ndarray
    shift: np.ndarray

    @staticmethod
    def of(angle_deg: float = 0.0, shift=(0.0, 0.0)) -> Pose:
        t = np.radians(angle_deg)
        return Pose(np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]), np.asarray(shift, float))

    def apply(self, points) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ self.rot.T + self.shift

    def then(self, other: Pose) -> Pose:
        """This map followed by ``other``."""
        return Pose(other.rot @ self.rot, other.rot @ self.shift + other.shift)


@dataclass(frozen=True, eq=False)
class Knee:
    """A posed right knee in the knee frame (mm).

    ``bones``: femur, trochlea, tibia, fibula, patella; ``poses``: each bone's or component's
    frame -> knee frame; ``components``: implants (post-op, else empty);
    ``resection``: bone kept per half-plane (bone frames), or None;
    ``landmarks_mm``: (K, 2) in the knee frame, the schema's order; ``truth``: angles.
    """

    kind: str
    anatomy: AnatomyParams
    implant: ImplantParams | None
    bones: dict
    components: dict
    poses: dict
    resection: dict | None
    landmarks_mm: np.ndarray
    truth: dict
    joint: dict  # construction details: gaps, subluxation, pivot


def _sample_preop(rng: np.random.Generator) -> tuple[int, float, float]:
    """(KL grade, aTFA, JLCA) of a pre-op knee: aTFA over -16 (varus) .. +20 (valgus), mostly as
    in knees planned for TKA (real films: -2.6 +- 6.7 degrees, three quarters varus,
    ../shared/real-films.md), the rest uniform so that every angle is learnt."""
    kl = int(rng.choice(5, p=[0.1, 0.15, 0.25, 0.25, 0.25]))
    atfa = float(np.clip(rng.normal(-2.6, 6.7), -16, 20)) if rng.random() < 0.6 else float(rng.uniform(-16, 20))
    magnitude = float(np.clip(abs(rng.normal(0.4 + 0.9 * kl, 1.0)), 0.0, 8.0))
    jlca = magnitude if atfa < 3.0 else -magnitude  # varus knees narrow medially (JLCA > 0)
    return kl, atfa, jlca


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    s = arc_length(points)
    t = np.linspace(0.0, s[-1], max(2, int(np.ceil(s[-1] / step)) + 1))
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


def _gap(upper: np.ndarray, lower: np.ndarray) -> float:
    """Separation (mm) of an upper surface above a lower one, both (N, 2) dense, v distal.

    Euclidean minimum distance while separate; minus the deepest vertical overlap once
    the upper curve dips below the lower one (so the function keeps falling).
    """
    order = np.argsort(lower[:, 0])
    lu, lv = lower[order, 0], lower[order, 1]
    within = (upper[:, 0] > lu[0]) & (upper[:, 0] < lu[-1])
    if within.any():
        vertical = np.interp(upper[within, 0], lu, lv) - upper[within, 1]
        if vertical.min() < 0:
            return float(vertical.min())
    d = upper[:, None, :] - lower[None, :, :]
    return float(np.sqrt(np.min(np.einsum("ijk,ijk->ij", d, d))))


def _close_joint(separation, start: float, step: float = 1.0) -> float:
    """Largest approach y (tibia moved proximally from ``start``) with separation(y) >= 0.

    ``separation(y)`` falls as y falls (the tibia rises). Walks down in ``step`` until it
    turns negative, then bisects to 1e-4 mm.
    """
    hi = start
    if separation(hi) < 0:
        raise ValueError("the joint does not open at the start position")
    lo = hi - step
    while separation(lo) >= 0:
        hi, lo = lo, lo - step
        if hi < start - 200:
            raise ValueError("the joint never closes")
    while hi - lo > 1e-4:
        mid = 0.5 * (hi + lo)
        if separation(mid) >= 0:
            hi = mid
        else:
            lo = mid
    return hi


def _span(chain: Chain, first: str, last: str) -> np.ndarray:
    """(M, 2) the chain's vertices from anchor ``first`` to anchor ``last`` (in chain order)."""
    i, j = chain.anchors[first], chain.anchors[last]
    return chain.points[min(i, j):max(i, j) + 1]


def build_knee(kind: str, rng: np.random.Generator) -> Knee:
    """Draw and assemble one knee of ``kind`` ('preop' or 'postop')."""
    postop = kind == "postop"
    implant = sample_implant(rng) if postop else None
    if postop:
        kl, atfa, jlca = 0, atfa_deg(implant), float(rng.normal(0.5, 1.5))  # the native joint line before TKA
    else:
        kl, atfa, jlca = _sample_preop(rng)
    anatomy = sample_anatomy(rng, kind, atfa, jlca, kl)
    femur, tibia = build_femur(anatomy), build_tibia(anatomy)
    fibula = build_fibula(anatomy, tibia)
    patella = build_patella(anatomy, femur, resurfaced=bool(postop and implant.patellar_button))
    bones = {"femur": femur, "trochlea": build_trochlea(femur), "tibia": tibia, "fibula": fibula, "patella": patella}
    components: dict[str, Component] = {}
    resection = None
    if postop:
        components = build_components(implant, femur, tibia)
        resection = resection_lines(components)
        if implant.patellar_button:
            components.update({c.name: c for c in patella_pegs(patella, rng)})

    sublux = float(np.clip(rng.normal(0.0, 0.8 + 0.4 * kl), -5.0, 5.0))
    if postop:
        fem, ins = components["femoral"], components["insert"]
        pivot = ins.in_bone(0.5 * (ins.chain["CTI01"] + ins.chain["CTI02"]))
        x_target = float(fem.in_bone(0.5 * (fem.chain["CFL06"] + fem.chain["CFM06"]))[0]) + 0.3 * sublux
        upper = [_resample(fem.in_bone(_span(fem.chain, "CFL03", "CFL09")), 0.25),
                 _resample(fem.in_bone(_span(fem.chain, "CFM09", "CFM03")), 0.25)]
        lower_t = [_resample(ins.in_bone(_span(ins.chain, "CTI00", "CTI03")), 0.25)]
        targets = [implant.contact_gap_mm]
        pairs = [(0, 0), (1, 0)]
        clear = None
    else:
        fc, tc = femur.chain, tibia.chain
        pivot = 0.5 * (tc["TSP01"] + tc["TSP05"])
        x_target = float(fc["FNT04"][0]) + sublux
        upper = [_resample(_span(fc, "FLK00", "FLK13"), 0.25), _resample(_span(fc, "FMK13", "FMK00"), 0.25)]
        lower_t = [_resample(_span(tc, "TLP00", "TLP07"), 0.25), _resample(_span(tc, "TMP07", "TMP00"), 0.25)]
        targets = [float(rng.uniform(*JSW_BY_GRADE_MM[kl]))]
        pairs = [(0, 0), (1, 1)]
        clear = (_resample(_span(fc, "FLK13", "FMK13"), 0.25), _resample(_span(tc, "TLP07", "TMP07"), 0.25))

    def tibia_pose(y: float) -> Pose:
        turn = Pose.of(atfa)
        return Pose(turn.rot, np.array([x_target, y]) - turn.rot @ pivot)

    def separation(y: float) -> float:
        pose = tibia_pose(y)
        gaps = [_gap(upper[i], pose.apply(lower_t[j])) for i, j in pairs]
        sep = min(gaps) - targets[0]
        if clear is not None:
            sep = min(sep, _gap(clear[0], pose.apply(clear[1])) - SPINE_CLEARANCE_MM)
        return sep

    start = float(femur.levels["joint"] - (tibia.levels["joint"] - pivot[1]) + 30.0)
    y = _close_joint(separation, start)
    t_pose = tibia_pose(y)
    poses = {"femur": Pose.of(), "trochlea": Pose.of(), "patella": Pose.of(), "tibia": t_pose, "fibula": t_pose}
    for name, comp in components.items():
        bone_pose = poses[comp.bone]
        poses[name] = Pose(*comp.to_bone).then(bone_pose)
    gaps = [_gap(upper[i], t_pose.apply(lower_t[j])) for i, j in pairs]

    schema = load_schema(kind)
    sources = {code: ((bones.get(src) or components[src]).chain, poses[src]) for code, src in _BONE_OF.items()
               if src in bones or src in components}
    landmarks = place_landmarks(schema, sources)
    truth = {"atfa_fts_deg": atfa, "atfa_fnts_deg": _fnts(femur, tibia, t_pose)}
    if postop:
        truth.update(alpha_deg=implant.alpha_deg, beta_deg=implant.beta_deg)
    joint = {"subluxation_mm": sublux, "closing_gaps_mm": gaps, "kl_grade": kl, "jlca_target_deg": jlca}
    return Knee(kind, anatomy, implant, bones, components, poses, resection, landmarks, truth, joint)


def _fnts(femur: Bone, tibia: Bone, tibia_pose: Pose) -> float:
    """aTFA between the construction's FNTS axes (see the module docstring)."""
    f_shaft = np.array([0.0, 0.5 * (femur.levels["proximal"] + femur.levels["diaphysis_end"])])
    d_f = femur.chain["FNT04"] - f_shaft
    t_shaft = np.array([0.0, 0.5 * (tibia.levels["distal"] + tibia.levels["diaphysis_end"])])
    spine = 0.5 * (tibia.chain["TSP01"] + tibia.chain["TSP05"])
    d_t = tibia_pose.rot @ (t_shaft - spine)
    lateral = np.array([-d_f[1], d_f[0]])  # right knee: distal (0, 1) -> lateral (-1, 0)
    return float(np.degrees(np.arctan2(d_t @ lateral, d_t @ d_f)))


def place_landmarks(schema: LandmarkSchema, sources: dict) -> np.ndarray:
    """(K, 2) landmarks by the schema's rule: equal arc length between consecutive anchors.

    ``sources``: contour code -> (Chain holding the contour's anchors, Pose to the knee
    frame).
    """
    out = np.full((len(schema), 2), np.nan)
    for contour in schema.contours:
        code = contour["code"]
        chain, pose = sources[code]
        anchors = sorted(contour["anchors"], key=lambda n: int(n[len(code):]))
        index = [int(n[len(code):]) for n in anchors]
        if index[0] != 0 or index[-1] != contour["count"] - 1:
            raise ValueError(f"contour {code}: anchors must include its first and last landmark")
        pieces = [chain.sample(a, b, j - i) for a, b, i, j in zip(anchors[:-1], anchors[1:], index[:-1], index[1:])]
        pts = np.concatenate([pieces[0]] + [p[1:] for p in pieces[1:]]) if pieces else chain[anchors[0]][None]
        names = [f"{code}{i:02d}" for i in range(contour["count"])]
        out[schema.indices(names)] = pose.apply(pts)
    return out


def limb_outline(knee: Knee) -> tuple[np.ndarray, np.ndarray]:
    """Skin and muscle outlines (closed polygons (M, 2), knee frame mm) of thigh, knee and leg.

    Soft tissue hugs the epicondyles and the tibial condyles at the joint and widens
    over the thigh and the calf; the muscle outline lies one subcutaneous fat layer
    inside the skin. Each side is a smooth curve through the femoral part (femur frame)
    and the tibial part (tibia frame, posed), so it bends with the knee.
    """
    p = knee.anatomy
    femur, tibia = knee.bones["femur"], knee.bones["tibia"]
    fibula_lat = -knee.bones["fibula"].chain["FIB05"][0]
    pose = knee.poses["tibia"]
    ew, pw = femur.levels["ew"], tibia.levels["pw"]

    def side(sign: float, soft: float, inset: float) -> np.ndarray:
        v_f = np.arange(-900.0, -14.0, 16.0)
        grow = np.minimum(p.thigh_gain * np.maximum(-v_f - 30.0, 0.0), 45.0) * (1.25 if sign > 0 else 1.0)
        fat = inset * (0.35 + 0.9 * smoothstep(-v_f, 20.0, 200.0))  # thin over the bony knee
        w_f = 0.5 * ew + soft + grow - fat
        v_t = np.arange(tibia.levels["joint"] + 16.0, 900.0, 16.0)
        base = max(0.5 * pw, fibula_lat if sign < 0 else 0.0) + soft - 2.0
        calf = p.calf_mm * np.exp(-0.5 * ((v_t - 110.0 * p.scale) / (60.0 * p.scale)) ** 2)
        taper = -0.08 * np.maximum(v_t - 200.0, 0.0)
        w_t = base + calf + taper - inset * (0.35 + 0.75 * smoothstep(v_t, 20.0, 200.0))
        w_f = w_f + p.skin_wobble_mm * np.sin(v_f / (35.0 + 10 * sign) + p.skin_phase + sign)
        w_t = w_t + p.skin_wobble_mm * np.sin(v_t / (40.0 - 8 * sign) + 2 * p.skin_phase)
        upper = np.stack([sign * w_f, v_f], axis=1)
        lower = pose.apply(np.stack([sign * np.maximum(w_t, 0.6 * pw), v_t], axis=1))
        return catmull_rom(np.concatenate([upper, lower]), 6)

    skin = np.concatenate([side(-1.0, p.soft_lat_mm, 0.0), side(1.0, p.soft_med_mm, 0.0)[::-1]])
    muscle = np.concatenate([side(-1.0, p.soft_lat_mm, p.fat_mm), side(1.0, p.soft_med_mm, p.fat_mm)[::-1]])
    return skin, muscle
