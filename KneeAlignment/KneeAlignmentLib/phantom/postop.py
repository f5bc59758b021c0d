"""Implants of a total knee arthroplasty: components, their angles and their placement.

Components are rigid bodies drawn from the post-op schema's template (their design
shape), scaled to the patient and placed on the bones. Every component landmark is a
material point of its rigid body, so the component angles of the landmarks are the
construction's angles exactly:

- alpha (femoral component angle, :func:`..geometry.compute_alignment`): the femoral
  component is turned about its own distal centre until the line CFL06-CFM06 makes
  alpha with the femoral shaft axis (medial side).
- beta (tibial component angle): the tray is turned about the centre of its lower
  surface until CTL00-CTM00 makes beta with the tibial shaft axis (medial side).

The joint then closes on the implants: the femoral component rests on the insert with
a joint-line convergence ``jlca_deg`` between the component and tray lines, so
aTFA = alpha + beta - 180 - jlca (see :func:`atfa_deg`).

Bone landmarks keep their pre-op meaning in post-op cases: they are the native
outline of femur and tibia, posed with the bone; where bone was resected (distal
femur below the cut, proximal tibia above the tray) they are the outline of the bone
as it was, hidden under metal or polyethylene.

Shapes: polygons (M, 2) mm in the component's own (template) frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import Bone, template_points
from .outline import Chain, bezier, catmull_rom

__all__ = ["ImplantParams", "Component", "sample_implant", "atfa_deg", "build_components",
           "resection_lines", "patella_pegs", "ALPHA_TARGET_DEG", "BETA_TARGET_DEG"]

ALPHA_TARGET_DEG = 96.0  # femoral component: ~6 degrees valgus to the anatomical axis
BETA_TARGET_DEG = 90.0   # tibial tray square to the tibial axis


@dataclass(frozen=True)
class ImplantParams:
    """One arthroplasty (mm, degrees). Sampled by :func:`sample_implant`."""

    alpha_deg: float          # femoral component angle (medial side)
    beta_deg: float           # tibial component angle (medial side)
    jlca_deg: float           # convergence between component and tray lines
    femoral_size: float       # factor on the template component (to the bone's size)
    tibial_size: float
    femoral_shift_mm: float   # ML offset of the femoral component from the notch
    femoral_seat_mm: float    # distal surface below (+) the native condyles
    tray_shift_mm: float      # ML offset of the tray from the tibial axis
    resection_mm: float       # tray lower surface below the native plateau
    insert_extra_mm: float    # insert thicker (+) than the template
    contact_gap_mm: float     # radiolucent gap left between component and insert
    cement_mm: float          # cement mantle under the tray and round the keel
    tibial_metal: str         # 'CoCr' or 'Ti'
    stem_mm: float            # stem extension beyond the keel's tip (0: keel only)
    stem_radius_mm: float
    patellar_button: bool


def sample_implant(rng: np.random.Generator) -> ImplantParams:
    """Component angles near their targets, one in five clearly away from them."""
    def angle(target):
        if rng.random() < 0.2:
            return float(target + rng.choice([-1, 1]) * rng.uniform(3.0, 9.0))
        return float(target + np.clip(rng.normal(0.0, 1.8), -4.0, 4.0))

    return ImplantParams(
        alpha_deg=angle(ALPHA_TARGET_DEG),
        beta_deg=angle(BETA_TARGET_DEG),
        jlca_deg=float(np.clip(rng.normal(0.0, 1.2), -3.5, 3.5)),
        femoral_size=float(rng.normal(1.0, 0.03)),
        tibial_size=float(rng.normal(1.0, 0.03)),
        femoral_shift_mm=float(np.clip(rng.normal(0.0, 1.5), -4.0, 4.0)),
        femoral_seat_mm=float(np.clip(rng.normal(0.5, 1.0), -2.0, 3.0)),
        tray_shift_mm=float(np.clip(rng.normal(0.0, 1.5), -4.0, 4.0)),
        resection_mm=float(np.clip(rng.normal(9.0, 1.5), 5.0, 13.0)),
        insert_extra_mm=float(rng.uniform(-1.0, 5.0)),
        contact_gap_mm=float(rng.uniform(0.0, 0.8)),
        cement_mm=float(rng.uniform(0.8, 2.5)),
        tibial_metal=str(rng.choice(["CoCr", "Ti"])),
        stem_mm=float(rng.uniform(20.0, 60.0)) if rng.random() < 0.25 else 0.0,
        stem_radius_mm=float(rng.uniform(5.0, 7.0)),
        patellar_button=bool(rng.random() < 0.4),
    )


def atfa_deg(p: ImplantParams) -> float:
    """aTFA (valgus +) that the implants impose: alpha + beta - 180 - jlca."""
    return p.alpha_deg + p.beta_deg - 180.0 - p.jlca_deg


@dataclass(frozen=True, eq=False)
class Component:
    """A rigid implant part (or cement mantle) in its own frame, and where it sits.

    ``chain``: outline with the schema anchors it carries (empty for cement).
    ``polygon``: closed outline the solid fills. ``profile``: v tables as for bones
    (half_depth, falloff). ``to_bone``: (R (2, 2), t (2,)) maps the component frame to
    its bone's frame. ``bone``: 'femur' or 'tibia'. ``material``: key of xray.MATERIALS.
    """

    name: str
    chain: Chain
    polygon: np.ndarray
    profile: dict
    material: str
    bone: str
    to_bone: tuple

    def in_bone(self, points: np.ndarray) -> np.ndarray:
        rot, shift = self.to_bone
        return np.asarray(points) @ rot.T + shift


def _flat_profile(v_lo, v_hi, half_depth, falloff):
    v = np.array([v_lo, v_hi], dtype=np.float64)
    return {"v": v, "half_depth": np.full(2, float(half_depth)), "falloff": np.full(2, float(falloff))}


def _rigid(angle_deg: float, scale: float, pivot: np.ndarray, target: np.ndarray) -> tuple:
    """(R, t): scale and turn about ``pivot`` (component frame), then move pivot to ``target``."""
    t = np.radians(angle_deg)
    rot = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return rot, target - rot @ pivot


def _line_deg(a, b) -> float:
    return float(np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])))


def _lines(points) -> np.ndarray:
    """Straight polyline through points, densely sampled (so corners stay sharp)."""
    pts = np.asarray(points, dtype=np.float64)
    out = [pts[:1]]
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(2, int(np.ceil(np.hypot(*(b - a)) / 0.25)))
        out.append(a + (b - a) * np.linspace(0, 1, n + 1)[1:, None])
    return np.concatenate(out)


def _nearest_vertices(points: np.ndarray, names) -> dict:
    """{name: index of the vertex of ``points`` at that template point} (exact hits)."""
    out = {}
    for name in names:
        d = np.hypot(*(points - template_points([name])[0]).T)
        out[name] = int(np.argmin(d))
        if d[out[name]] > 1e-9:
            raise ValueError(f"{name} is not a vertex of its component outline")
    return out


def _chain_from_pieces(pieces) -> Chain:
    """Concatenate (points, {anchor: local index}) pieces whose ends coincide."""
    pts, anchors = [], {}
    for k, (p, marks) in enumerate(pieces):
        offset = sum(len(q) for q in pts) - (1 if k else 0)
        anchors.update({name: i + offset for name, i in marks.items()})
        pts.append(p if k == 0 else p[1:])
    return Chain(np.concatenate(pts), anchors)


def _femoral_chain() -> tuple[Chain, np.ndarray]:
    lat = [f"CFL{i:02d}" for i in range(10)]
    med = [f"CFM{i:02d}" for i in range(9, -1, -1)]
    box = [f"CFB{i:02d}" for i in range(5)]
    n = 24
    lat_pts = catmull_rom(template_points(lat), n)
    med_pts = catmull_rom(template_points(med), n)
    box_pts = _lines(template_points(["CFL09"] + box + ["CFM09"]))  # straight walls, sharp corners
    box_marks = _nearest_vertices(box_pts, box)
    chain = _chain_from_pieces([
        (lat_pts, {name: i * n for i, name in enumerate(lat) if name in ("CFL00", "CFL03", "CFL06", "CFL09")}),
        (box_pts, box_marks),
        (med_pts, {name: i * n for i, name in enumerate(med) if name in ("CFM00", "CFM03", "CFM06", "CFM09")}),
    ])
    a, b = chain["CFM00"], chain["CFL00"]
    top = bezier(a, a + (-14.0, -9.0), b + (14.0, -9.0), b, 80)  # anterior flange's proximal edge
    polygon = np.concatenate([chain.points, top[1:-1]])
    return chain, polygon


def _tray_chain(stem_mm: float, stem_radius_mm: float) -> tuple[Chain, np.ndarray]:
    """Tray plate with its keel, or keel and stem: the outline from CTS00 over the top,
    down the medial side, round the keel (CTK04 .. CTK00) and back along the lower surface."""
    top = template_points([f"CTS{i:02d}" for i in range(7)])
    k4, k3, k2, k1, k0 = template_points([f"CTK{i:02d}" for i in range(4, -1, -1)])
    if stem_mm > 0:  # a cylindrical stem continues the keel: CTK02 is the stem's tip
        r = stem_radius_mm
        tip = k2 + np.array([0.0, stem_mm])
        keel_points = np.array([k4, k3, [r, k2[1]], [r, tip[1] - r], tip, [-r, tip[1] - r], [-r, k2[1]], k1, k0])
        keel = catmull_rom(keel_points, 24)
        marks = {"CTK04": 0, "CTK03": 24, "CTK02": 96, "CTK01": 168, "CTK00": 192}
    else:
        keel = catmull_rom(np.array([k4, k3, k2, k1, k0]), 24)
        marks = {f"CTK{4 - i:02d}": i * 24 for i in range(5)}
    right = _lines(np.concatenate([top[-1:], template_points(["CTM00", "CTM01", "CTM02", "CTK04"])]))
    left = _lines(template_points(["CTK00", "CTL02", "CTL01", "CTL00"]))
    top_line = _lines(top)
    chain = _chain_from_pieces([
        (top_line, _nearest_vertices(top_line, ["CTS00", "CTS03", "CTS06"])),
        (right, _nearest_vertices(right, ["CTM00", "CTM02"])),
        (keel, marks),
        (left, _nearest_vertices(left, ["CTL02", "CTL00"])),
    ])
    return chain, chain.points  # closes from CTL00 straight up to CTS00


def _insert_chain(extra_mm: float) -> tuple[Chain, np.ndarray]:
    c0, c1, c2, c3 = template_points(["CTI00", "CTI01", "CTI02", "CTI03"])
    ridge = np.array([0.0, 0.5 * (c0[1] + c1[1]) - 0.5])
    surface = catmull_rom(np.array([c0, c1, ridge, c2, c3]), 24)
    surface[:, 1] -= extra_mm
    tray_top = template_points(["CTS00"])[0][1]
    lat_wall = np.array([[c0[0] - 1.0, tray_top], [c0[0] - 1.0, c0[1] - extra_mm + 1.0]])
    med_wall = np.array([[c3[0] + 1.0, c3[1] - extra_mm + 1.0], [c3[0] + 1.0, tray_top]])
    chain = Chain(surface, {"CTI00": 0, "CTI01": 24, "CTI02": 72, "CTI03": 96})
    polygon = np.concatenate([lat_wall, surface, med_wall])
    return chain, polygon


def _offset_polygon(points: np.ndarray, distance: float) -> np.ndarray:
    """Open polyline moved outwards by ``distance`` (normals away from its centroid side)."""
    tangent = np.gradient(points, axis=0)
    tangent /= np.maximum(np.hypot(*tangent.T), 1e-12)[:, None]
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    centre = points.mean(axis=0)
    if np.mean(np.sum((points - centre) * normal, axis=1)) < 0:
        normal = -normal
    return points + distance * normal


def build_components(p: ImplantParams, femur: Bone, tibia: Bone) -> dict[str, Component]:
    """All implant parts placed on the bones (femoral component, tray, insert, cement)."""
    comps: dict[str, Component] = {}
    size = femur.levels["ew"] / 84.0  # the template knee's epicondylar width

    fchain, fpoly = _femoral_chain()
    pivot = 0.5 * (fchain["CFL06"] + fchain["CFM06"])
    current = 90.0 + _line_deg(fchain["CFL06"], fchain["CFM06"])  # alpha of the template component
    notch_u = femur.chain["FNT04"][0]
    target = np.array([notch_u + p.femoral_shift_mm, femur.levels["joint"] + p.femoral_seat_mm])
    f_pose = _rigid(p.alpha_deg - current, size * p.femoral_size, pivot, target)
    v_lo, v_hi = fpoly[:, 1].min() - 1, fpoly[:, 1].max() + 1
    comps["femoral"] = Component("femoral", fchain, fpoly, _flat_profile(v_lo, v_hi, 31.0, 3.0), "CoCr", "femur",
                                 f_pose)

    tchain, tpoly = _tray_chain(p.stem_mm, p.stem_radius_mm)
    pivot = 0.5 * (tchain["CTL00"] + tchain["CTM00"])
    tsize = tibia.levels["pw"] / 77.0 * p.tibial_size
    target = np.array([p.tray_shift_mm, tibia.levels["joint"] + p.resection_mm])
    t_pose = _rigid(90.0 - p.beta_deg, tsize, pivot, target)
    keel_top = pivot[1] + 2.0
    keel_tip = template_points(["CTK02"])[0][1]
    stem = p.stem_radius_mm if p.stem_mm > 0 else 5.0
    profile = {"v": np.array([pivot[1] - 10, keel_top, keel_top + 4, keel_tip, keel_tip + 200.0]),
               "half_depth": np.array([23.0, 23.0, 6.5, stem, stem]), "falloff": np.full(5, 2.0)}
    comps["tray"] = Component("tray", tchain, tpoly, profile, p.tibial_metal, "tibia", t_pose)

    ichain, ipoly = _insert_chain(p.insert_extra_mm)
    comps["insert"] = Component("insert", ichain, ipoly, _flat_profile(-30, 30, 22.0, 2.5), "PE", "tibia", t_pose)

    # cement: a band under the tray (into the cut cancellous bone) and a mantle round the keel
    y0 = pivot[1]
    c = p.cement_mm
    band = np.array([[-36.0, y0], [36.0, y0], [36.0, y0 + c], [-36.0, y0 + c]])
    comps["tray_cement"] = Component("tray_cement", Chain(band, {}), band, _flat_profile(-30, 80, 21.0, 1.0),
                                     "cement", "tibia", t_pose)
    keel = tchain.points[tchain.anchors["CTK04"]:tchain.anchors["CTK00"] + 1]
    mantle = _offset_polygon(keel, c)
    mantle = np.concatenate([[[mantle[0, 0], y0 + c]], mantle, [[mantle[-1, 0], y0 + c]]])
    comps["keel_cement"] = Component("keel_cement", Chain(mantle, {}), mantle, _flat_profile(-30, 80, 6.5 + c, 1.0),
                                     "cement", "tibia", t_pose)
    return comps


def resection_lines(comps: dict[str, Component]) -> dict[str, tuple]:
    """Where bone was cut, as half-planes in the bones' frames.

    Returns {'femur': (point (2,), normal (2,)), 'tibia': (...)}: bone is kept where
    (x - point) . normal >= 0. The femur keeps what lies proximal of the distal cut
    (the line through the box's lower corners), the tibia what lies distal of the
    tray's lower surface.
    """
    f = comps["femoral"]
    a, b = f.in_bone(f.chain["CFL09"]), f.in_bone(f.chain["CFM09"])
    d = (b - a) / np.linalg.norm(b - a)
    femur_normal = np.array([d[1], -d[0]])  # points proximally (towards -v)
    if femur_normal[1] > 0:
        femur_normal = -femur_normal
    t = comps["tray"]
    a, b = t.in_bone(t.chain["CTL00"]), t.in_bone(t.chain["CTM00"])
    d = (b - a) / np.linalg.norm(b - a)
    tibia_normal = np.array([-d[1], d[0]])
    if tibia_normal[1] < 0:
        tibia_normal = -tibia_normal
    femur_point = f.in_bone(0.5 * (f.chain["CFL09"] + f.chain["CFM09"]))
    return {"femur": (femur_point, femur_normal), "tibia": (0.5 * (a + b), tibia_normal)}


def patella_pegs(patella: Bone, rng: np.random.Generator) -> list[Component]:
    """Three cement-filled fixation holes of a resurfaced patella (in the femur frame)."""
    cu, cv = patella.levels["centre_u"], patella.levels["centre_v"]
    t = np.linspace(0.0, 2 * np.pi, 33)[:-1]
    circle = 3.2 * np.stack([np.cos(t), np.sin(t)], axis=1)
    angle = rng.uniform(0, 2 * np.pi)
    pegs = []
    for k in range(3):
        a = angle + 2 * np.pi * k / 3
        centre = np.array([cu + 9.0 * np.cos(a), cv + 9.0 * np.sin(a)])
        poly = circle + centre
        pegs.append(Component(f"patella_peg{k}", Chain(poly, {}), poly, _flat_profile(-500, 500, 4.0, 2.0),
                              "cement", "femur", (np.eye(2), np.zeros(2))))
    return pegs

