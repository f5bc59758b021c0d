"""Author the landmark schemas: writes KneeAlignmentLib/data/{preop,postop}.json and the
annotated examples in data/examples.

The JSON files are the single source of truth read by every part of the project; this
script is how they were made and how they are changed (a test checks that they still
match it). Each contour is a chain of named anchors joined by smooth curves (cubic
Bezier segments); landmarks lie at equal arc length between consecutive anchors, which
is the placement rule an annotator follows. The curves and the rule are the phantom's
(``KneeAlignmentLib.phantom.outline``), which builds its bones the same way. The
template is a mean adult right knee in millimetres: x towards the viewer's right (medial
for a right knee in the radiological convention), y downwards (distal), origin at the
knee centre.

Run: python tools/author_schemas.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from KneeAlignmentLib.phantom.outline import Chain, bezier as _bezier, smoothstep as _smoothstep

OUT = Path(__file__).resolve().parents[1] / "KneeAlignment" / "KneeAlignmentLib" / "data"
SCHEMA_VERSION = "1.0"
_DENSE = 400  # vertices per curve


def bezier(p0, c0, c1, p1):
    return _bezier(p0, c0, c1, p1, n=_DENSE)


def line(p0, p1):
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    return bezier(p0, p0 + (p1 - p0) / 3, p0 + 2 * (p1 - p0) / 3, p1)


def resample(curve, n_intervals):
    """n_intervals + 1 points at equal arc length along a dense curve (both ends kept)."""
    return Chain(curve, {"start": 0, "end": len(curve) - 1}).sample("start", "end", n_intervals)


def contour(segments):
    """segments: [(curve, n_intervals), ...] joined end to start; returns points, anchor indices."""
    points, anchors = [], [0]
    for i, (curve, n) in enumerate(segments):
        pts = resample(curve, n)
        points.extend(pts if i == 0 else pts[1:])
        anchors.append(len(points) - 1)
    return np.array(points), anchors


# ---------------------------------------------------------------------------------
# Contours of a right knee (lateral = -x). Each entry: code, group, side ('lateral',
# 'medial' or None), what the contour follows, anchors (index -> description), points.
# ---------------------------------------------------------------------------------

def femur_cortex(sign, side):
    # shaft from the proximal level down to the end of the diaphysis, then the
    # metaphyseal flare to the epicondyle
    s = sign
    pts, anchors = contour([
        (line((s * 15.0, -120.0), (s * 15.5, -60.0)), 7),
        (bezier((s * 15.5, -60.0), (s * 16.5, -42.0), (s * (40.0 if side == "lateral" else 41.0), -40.0),
                (s * (41.0 if side == "lateral" else 43.0), -22.0 if side == "lateral" else -24.0)), 8),
    ])
    return pts, {
        anchors[0]: f"{side} femoral cortex at the proximal level: 1.5 epicondylar widths above the joint line",
        anchors[1]: f"{side} femoral cortex at the end of the diaphysis: 0.75 epicondylar widths above the joint line",
        anchors[2]: f"{side} epicondyle: the most {side} point of the distal femur",
    }


def femur_condyle(sign, side):
    s = sign
    epi = (s * (41.0 if side == "lateral" else 43.0), -22.0 if side == "lateral" else -24.0)
    distal = (s * (22.0 if side == "lateral" else 23.0), -3.0 if side == "lateral" else -2.0)
    notch_edge = (s * 10.0, -8.0)
    # start one step below the epicondyle: the contour continues the cortex without repeating it
    full = np.concatenate([
        bezier(epi, (s * 42.0, -8.0), (s * 34.0, distal[1]), distal),
        bezier(distal, (s * 15.0, distal[1]), (s * 11.0, -4.0), notch_edge)[1:],
    ])
    split = 400
    first = resample(full[:split], 7)[1:]  # 7 points after the epicondyle, ending at the distal point
    second = resample(full[split - 1:], 7)[1:]  # 7 points to the notch margin
    pts = np.concatenate([first, second])
    return pts, {
        0: f"{side} condyle: first point after the {side} epicondyle (equal arc length to the distal point)",
        6: f"most distal point of the {side} femoral condyle (perpendicular to the femoral shaft)",
        13: f"{side} margin of the intercondylar notch, where the condyle turns into the notch",
    }


def femoral_notch():
    pts, _ = contour([
        (bezier((-9.0, -12.0), (-9.5, -19.0), (-5.0, -24.0), (0.0, -24.0)), 4),
        (bezier((0.0, -24.0), (5.0, -24.0), (9.5, -19.0), (9.0, -12.0)), 4),
    ])
    return pts, {
        0: "lateral wall of the intercondylar notch, 4 mm above its margin",
        4: "apex (roof) of the intercondylar notch: the femoral notch point",
        8: "medial wall of the intercondylar notch, 4 mm above its margin",
    }


def tibia_cortex(sign, side):
    s = sign
    top = (s * (38.0 if side == "lateral" else 39.0), 12.0)
    pts, anchors = contour([
        (line((s * 14.0, 120.0), (s * 14.5, 60.0)), 6),
        (bezier((s * 14.5, 60.0), (s * 16.0, 40.0), (s * 36.0, 30.0), top), 7),
    ])
    return pts, {
        anchors[0]: f"{side} tibial cortex at the distal level: 1.5 plateau widths below the joint line",
        anchors[1]: f"{side} tibial cortex at the end of the diaphysis: 0.75 plateau widths below the joint line",
        anchors[2]: f"most {side} point of the {side} tibial condyle (metaphyseal margin below the plateau)",
    }


def tibial_plateau(sign, side):
    s = sign
    pts, _ = contour([(bezier((s * 37.0, 5.0), (s * 27.0, 2.5), (s * 16.0, 2.5), (s * 8.0, 3.0)), 7)])
    return pts, {
        0: f"{side} margin (corner) of the tibial plateau",
        7: f"base of the {side} tibial spine, where the {side} plateau ends",
    }


def tibial_spines():
    pts = np.array([(-6.5, 1.5), (-4.5, -3.0), (-2.0, -0.5), (0.0, 0.5), (2.0, -0.5), (4.5, -3.5), (6.5, 1.5)])
    return pts, {
        0: "lateral slope of the lateral tibial spine, half way up",
        1: "tip of the lateral tibial spine (lateral intercondylar tubercle)",
        3: "lowest point between the spines (centre of the intercondylar eminence)",
        5: "tip of the medial tibial spine (medial intercondylar tubercle)",
        6: "medial slope of the medial tibial spine, half way up",
    }


def fibula():
    lat, _ = contour([
        (line((-40.0, 120.0), (-40.5, 60.0)), 3),
        (bezier((-40.5, 60.0), (-42.0, 45.0), (-48.0, 38.0), (-47.0, 28.0)), 2),
    ])
    head = np.array([(-45.0, 17.0), (-34.0, 19.0)])
    med, _ = contour([
        (bezier((-31.0, 30.0), (-30.0, 40.0), (-33.5, 48.0), (-33.5, 60.0)), 2),
        (line((-33.5, 60.0), (-33.0, 120.0)), 3),
    ])
    pts = np.concatenate([lat, head, med])
    return pts, {
        0: "lateral border of the fibular shaft at the tibial distal level",
        5: "most lateral point of the fibular head",
        6: "apex of the fibular head (styloid process)",
        7: "medial end of the proximal tibiofibular joint (upper edge of the fibular head facet)",
        8: "medial border of the fibular head below the tibiofibular joint",
        13: "medial border of the fibular shaft at the tibial distal level",
    }


def femoral_component(sign, side):
    s = sign
    prox = (s * 36.0, -42.0)
    distal = (s * 22.0, -3.5)
    box = (s * 9.5, -9.0)
    pts, anchors = contour([
        (bezier(prox, (s * 40.0, -30.0), (s * 40.0, -15.0), (s * 33.0, -7.0)), 3),
        (bezier((s * 33.0, -7.0), (s * 29.0, -3.5), (s * 25.0, -3.5), distal), 3),
        (bezier(distal, (s * 16.0, -3.5), (s * 11.0, -5.0), box), 3),
    ])
    return pts, {
        anchors[0]: f"proximal tip of the {side} border of the femoral component (anterior flange edge)",
        anchors[1]: f"{side} posterior-distal corner of the femoral component outline",
        anchors[2]: f"most distal point of the {side} condyle of the femoral component",
        anchors[3]: f"{side} lower corner of the femoral component box (intercondylar cut-out)",
    }


def femoral_component_box():
    pts = np.array([(-9.5, -15.0), (-9.5, -21.0), (0.0, -21.0), (9.5, -21.0), (9.5, -15.0)])
    return pts, {
        0: "lateral wall of the femoral component box, midway",
        1: "lateral upper corner of the femoral component box",
        2: "roof of the femoral component box, centre",
        3: "medial upper corner of the femoral component box",
        4: "medial wall of the femoral component box, midway",
    }


def tibial_tray_superior():
    pts = resample(line((-37.0, 10.0), (37.0, 10.0)), 6)
    return pts, {0: "lateral end of the tibial tray's upper surface",
                 3: "centre of the tibial tray's upper surface",
                 6: "medial end of the tibial tray's upper surface"}


def tibial_tray_inferior(sign, side):
    s = sign
    pts = resample(line((s * 37.0, 14.0), (s * 11.0, 14.0)), 2)
    return pts, {0: f"{side} corner of the tibial tray's lower surface (bone-implant interface)",
                 2: f"{side} junction of the tray's lower surface with the keel"}


def tibial_keel():
    pts = np.array([(-9.0, 18.0), (-7.0, 36.0), (0.0, 56.0), (7.0, 36.0), (9.0, 18.0)])
    return pts, {0: "lateral edge of the keel below the tray", 1: "lateral edge of the keel, midway",
                 2: "tip of the keel (or stem)", 3: "medial edge of the keel, midway",
                 4: "medial edge of the keel below the tray"}


def tibial_insert():
    pts = np.array([(-35.0, 1.5), (-20.0, 4.0), (20.0, 4.0), (35.0, 1.5)])
    return pts, {0: "lateral upper corner of the polyethylene insert",
                 1: "lowest point of the insert's lateral articular surface",
                 2: "lowest point of the insert's medial articular surface",
                 3: "medial upper corner of the polyethylene insert"}


GROUPS = {
    # group: (display name, colour as RGB 0..1)
    "femur_lateral_cortex": ("Femur lateral cortex", (0.90, 0.30, 0.25)),
    "femur_lateral_condyle": ("Femur lateral condyle", (0.95, 0.55, 0.20)),
    "femoral_notch": ("Intercondylar notch", (0.95, 0.85, 0.25)),
    "femur_medial_condyle": ("Femur medial condyle", (0.60, 0.85, 0.30)),
    "femur_medial_cortex": ("Femur medial cortex", (0.25, 0.75, 0.45)),
    "tibia_lateral_cortex": ("Tibia lateral cortex", (0.25, 0.70, 0.85)),
    "tibia_lateral_plateau": ("Tibia lateral plateau", (0.30, 0.50, 0.95)),
    "tibial_spines": ("Tibial spines", (0.55, 0.40, 0.95)),
    "tibia_medial_plateau": ("Tibia medial plateau", (0.80, 0.40, 0.90)),
    "tibia_medial_cortex": ("Tibia medial cortex", (0.95, 0.45, 0.70)),
    "fibula": ("Fibula", (0.70, 0.70, 0.70)),
    "femoral_component": ("Femoral component", (0.85, 0.85, 0.95)),
    "tibial_component": ("Tibial component", (0.60, 0.95, 0.95)),
    "tibial_insert": ("Tibial insert (polyethylene)", (0.95, 0.95, 0.60)),
}

# (code, group, builder, mirror code or None, 'same' for contours symmetric in themselves)
PREOP = [
    ("FLC", "femur_lateral_cortex", lambda: femur_cortex(-1, "lateral"), "FMC"),
    ("FLK", "femur_lateral_condyle", lambda: femur_condyle(-1, "lateral"), "FMK"),
    ("FNT", "femoral_notch", femoral_notch, "reverse"),
    ("FMK", "femur_medial_condyle", lambda: femur_condyle(+1, "medial"), "FLK"),
    ("FMC", "femur_medial_cortex", lambda: femur_cortex(+1, "medial"), "FLC"),
    ("TLC", "tibia_lateral_cortex", lambda: tibia_cortex(-1, "lateral"), "TMC"),
    ("TLP", "tibia_lateral_plateau", lambda: tibial_plateau(-1, "lateral"), "TMP"),
    ("TSP", "tibial_spines", tibial_spines, "reverse"),
    ("TMP", "tibia_medial_plateau", lambda: tibial_plateau(+1, "medial"), "TLP"),
    ("TMC", "tibia_medial_cortex", lambda: tibia_cortex(+1, "medial"), "TLC"),
    ("FIB", "fibula", fibula, None),
]
POSTOP_EXTRA = [
    ("CFL", "femoral_component", lambda: femoral_component(-1, "lateral"), "CFM"),
    ("CFB", "femoral_component", femoral_component_box, "reverse"),
    ("CFM", "femoral_component", lambda: femoral_component(+1, "medial"), "CFL"),
    ("CTS", "tibial_component", tibial_tray_superior, "reverse"),
    ("CTL", "tibial_component", lambda: tibial_tray_inferior(-1, "lateral"), "CTM"),
    ("CTK", "tibial_component", tibial_keel, "reverse"),
    ("CTM", "tibial_component", lambda: tibial_tray_inferior(+1, "medial"), "CTL"),
    ("CTI", "tibial_insert", tibial_insert, "reverse"),
]

CONTOUR_TEXT = {
    "FLC": "lateral outer cortex of the femur, proximal to distal",
    "FLK": "outline of the lateral femoral condyle, from the epicondyle round the distal surface to the notch",
    "FNT": "outline of the intercondylar notch, lateral wall over the roof to the medial wall",
    "FMK": "outline of the medial femoral condyle, from the epicondyle round the distal surface to the notch",
    "FMC": "medial outer cortex of the femur, proximal to distal",
    "TLC": "lateral outer cortex of the tibia, distal to proximal",
    "TLP": "lateral tibial plateau (articular surface), from its margin to the spine",
    "TSP": "tibial spines (intercondylar eminence), lateral to medial",
    "TMP": "medial tibial plateau (articular surface), from its margin to the spine",
    "TMC": "medial outer cortex of the tibia, distal to proximal",
    "FIB": "outline of the fibula: lateral border up, over the head, medial border down",
    "CFL": "lateral outline of the femoral component, proximal tip round the distal surface to the box",
    "CFB": "box (intercondylar cut-out) of the femoral component, lateral wall over the roof to the medial wall",
    "CFM": "medial outline of the femoral component, proximal tip round the distal surface to the box",
    "CTS": "upper surface of the metal tibial tray, lateral to medial",
    "CTL": "lower surface of the tibial tray, lateral part, outer corner to the keel",
    "CTK": "keel or stem of the tibial component, lateral edge over the tip to the medial edge",
    "CTM": "lower surface of the tibial tray, medial part, outer corner to the keel",
    "CTI": "upper surface of the polyethylene insert (radiolucent; seen as the gap between the metal parts)",
}

# Derived points and lines; every point is the mean of the named landmarks.
DEFINITIONS_PREOP = {
    "reference_points": {
        "description": "The two points the global stage finds; they fix the similarity frame of the local crop.",
        "points": [
            {"name": "knee_centre", "mean_of": ["FLK06", "FMK06", "TSP01", "TSP05"],
             "description": "mean of the most distal points of both condyles and the two tibial spine tips"},
            {"name": "femoral_shaft_centre", "mean_of": ["FLC07", "FMC07"],
             "description": "centre of the femoral shaft at the end of the diaphysis"},
        ],
    },
    "femoral_shaft_centres": {
        "description": "Midpoints of paired femoral cortex points along the diaphysis (FTS femoral axis: line fitted through them).",
        "pairs": [[f"FLC{i:02d}", f"FMC{i:02d}"] for i in range(8)],
    },
    "tibial_shaft_centres": {
        "description": "Midpoints of paired tibial cortex points along the diaphysis (FTS tibial axis: line fitted through them).",
        "pairs": [[f"TLC{i:02d}", f"TMC{i:02d}"] for i in range(7)],
    },
    "femoral_notch": {"description": "Femoral notch point (FNTS femoral axis: femoral shaft centre to this point).",
                      "mean_of": ["FNT04"]},
    "tibial_spine_centre": {"description": "Midpoint of the two spine tips (FNTS tibial axis: tibial shaft centre to this point).",
                            "mean_of": ["TSP01", "TSP05"]},
    "femoral_condylar_line": {"description": "Tangent to the distal condyles: most distal lateral and medial points.",
                              "points": ["FLK06", "FMK06"]},
    "tibial_plateau_line": {"description": "Joint line of the tibia: lateral and medial plateau margins.",
                            "points": ["TLP00", "TMP00"]},
    "joint_space": {
        "description": "Minimum distance between the condyle outline and the plateau outline on each side.",
        "lateral": {"femur": [f"FLK{i:02d}" for i in range(3, 14)], "tibia": [f"TLP{i:02d}" for i in range(8)]},
        "medial": {"femur": [f"FMK{i:02d}" for i in range(3, 14)], "tibia": [f"TMP{i:02d}" for i in range(8)]},
    },
}
DEFINITIONS_POSTOP_EXTRA = {
    "femoral_component_line": {"description": "Distal condylar surface of the femoral component (most distal lateral and medial points); with the femoral anatomical axis it gives the femoral component angle (alpha).",
                               "points": ["CFL06", "CFM06"]},
    "tibial_component_line": {"description": "Lower surface of the tibial tray (lateral and medial corners); with the tibial anatomical axis it gives the tibial component angle (beta).",
                              "points": ["CTL00", "CTM00"]},
}


# Joint-line obliquity of a normal knee: the distal femur is drawn with its condylar line
# 81 deg from the shaft on the lateral side (aLDFA) and the plateau 87 deg from the tibial
# shaft on the medial side (MPTA), by shearing the ends of the bones; shafts stay vertical.
# The femoral component follows the condyles (alpha ~97 deg); the tibial tray stays at 90.
FEMUR_SHEAR = np.tan(np.radians(7.6))   # template condylar line before shearing: aLDFA 88.7
TIBIA_SHEAR = np.tan(np.radians(3.0))   # template plateau before shearing: MPTA 90


def joint_obliquity(code, pts):
    pts = np.array(pts, dtype=float)
    x, y = pts[:, 0], pts[:, 1]
    if code[0] == "F" and code != "FIB" or code.startswith("CF"):
        pts[:, 1] = y + FEMUR_SHEAR * x * _smoothstep(y, -60.0, -25.0)  # full below y = -25
    elif code[0] == "T":  # the tibial tray stays square to the shaft, as a surgeon cuts it
        pts[:, 1] = y + TIBIA_SHEAR * x * _smoothstep(y, 50.0, 15.0)  # full above y = 15
    return pts


def build(kind):
    entries = PREOP + (POSTOP_EXTRA if kind == "postop" else [])
    built = {}
    for code, _, builder, _ in entries:
        pts, anchors = builder()
        built[code] = (joint_obliquity(code, pts), anchors)
    landmarks, contours, template = [], [], []
    for code, group, _, mirror in entries:
        pts, anchors = built[code]
        n = len(pts)
        names = [f"{code}{i:02d}" for i in range(n)]
        contours.append({
            "code": code, "group": group, "follows": CONTOUR_TEXT[code], "count": n,
            "anchors": {names[i]: text for i, text in sorted(anchors.items())},
            "placement": "equal arc length between consecutive anchors",
        })
        for i, name in enumerate(names):
            if mirror is None:
                partner = None
            elif mirror == "reverse":
                partner = f"{code}{n - 1 - i:02d}"
            else:
                partner = f"{mirror}{i:02d}"
            if partner == name:
                partner = None
            text = anchors.get(i) or f"{CONTOUR_TEXT[code]}: point {i} of {n}"
            landmarks.append({"index": len(landmarks), "name": name, "group": group,
                              "description": text, "mirror": partner})
            template.append([round(float(pts[i][0]), 3), round(float(pts[i][1]), 3)])
    definitions = dict(DEFINITIONS_PREOP)
    if kind == "postop":
        definitions.update(DEFINITIONS_POSTOP_EXTRA)
    used_groups = [g for g in GROUPS if any(lm["group"] == g for lm in landmarks)]
    return {
        "schema": f"kneealignment-landmarks-{kind}",
        "version": SCHEMA_VERSION,
        "kind": kind,
        "count": len(landmarks),
        "description": ("Landmarks outlining femur, tibia and fibula" +
                        (" and the femoral and tibial components of a total knee arthroplasty" if kind == "postop" else "") +
                        " on an AP knee radiograph. Names are anatomical (lateral/medial), so a left knee mirrored "
                        "into a right one keeps every name; 'mirror' is the partner across the knee's midline, "
                        "used when an image is flipped while lateral is still taken to be on the same side."),
        "placement_rule": "Along each contour, points are spaced at equal arc length between consecutive named anchors.",
        "template": {"units": "mm", "description": "Mean adult right knee, radiological view: x to the viewer's right (medial), y distal, origin at the knee centre."},
        "groups": {g: {"label": GROUPS[g][0], "color": list(GROUPS[g][1])} for g in used_groups},
        "contours": contours,
        "definitions": definitions,
        "landmarks": landmarks,
        "template_mm": template,
    }


EXAMPLE_VALGUS_DEG = {"preop": 6.0, "postop": 4.0}
EXAMPLE_SPACING_MM = (0.15, 0.15)


def write_example(kind):
    """The template posed with a known valgus, as the bundled example annotation."""
    from KneeAlignmentLib.markups import ImagePlane, write_landmarks
    from KneeAlignmentLib.schema import example_landmarks_px, load_schema

    load_schema.cache_clear()
    schema = load_schema(kind)
    points_px = example_landmarks_px(kind, atfa_valgus_deg=EXAMPLE_VALGUS_DEG[kind],
                                     spacing_mm=EXAMPLE_SPACING_MM[0])
    path = OUT / "examples" / f"example_{kind}.mrk.json"
    path.parent.mkdir(exist_ok=True)
    return write_landmarks(path, schema.names, points_px, ImagePlane.identity(EXAMPLE_SPACING_MM),
                           descriptions=[lm.description for lm in schema.landmarks],
                           node_name=f"Example {kind} landmarks")


def main():
    for kind in ("preop", "postop"):
        doc = build(kind)
        path = OUT / f"{kind}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{path}: {doc['count']} landmarks")
        print(f"{write_example(kind)}: {EXAMPLE_VALGUS_DEG[kind]} deg valgus by construction")


if __name__ == "__main__":
    main()
