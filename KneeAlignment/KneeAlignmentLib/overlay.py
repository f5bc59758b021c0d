"""Pictures for people: the landmark schema diagram (and, later, measurement overlays).

Drawn with matplotlib's object-oriented API on an Agg canvas: no pyplot global state,
no display needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .schema import load_schema


def draw_schema(kind: str, path: Path) -> Path:
    """Write a labelled diagram of the schema's template (a right knee) as a PNG."""
    schema = load_schema(kind)
    pts = schema.template_mm
    fig = Figure(figsize=(9, 12), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    centre = pts.mean(axis=0)
    for contour in schema.contours:
        idx = schema.indices(n for n in schema.names if n.startswith(contour["code"]))
        color = schema.groups[contour["group"]]["color"]
        ax.plot(pts[idx, 0], pts[idx, 1], "-", color=color, lw=1.0, alpha=0.6)
        ax.plot(pts[idx, 0], pts[idx, 1], "o", color=color, ms=2.5)
        for i in idx:
            # labels pushed away from the knee's centre line so neighbours overlap less
            dx = 1.5 if pts[i, 0] >= centre[0] else -1.5
            name = schema.names[i]
            anchor = name in contour["anchors"]
            ax.annotate(name, pts[i], xytext=(pts[i, 0] + dx, pts[i, 1]), fontsize=4.2 if anchor else 3.2,
                        fontweight="bold" if anchor else "normal", color="black",
                        ha="left" if dx > 0 else "right", va="center")
    for group, info in schema.groups.items():
        ax.plot([], [], "o-", color=info["color"], label=info["label"])
    ref = schema.reference_points(pts)
    ax.plot(ref[:, 0], ref[:, 1], "k*", ms=9, label="reference points (global stage)")
    for name in ("femoral_shaft_centres", "tibial_shaft_centres"):
        c = schema.derive(pts, name)
        ax.plot(c[:, 0], c[:, 1], "k+", ms=5)
    ax.plot([], [], "k+", label="shaft centres (FTS axes)")
    ax.set_title(f"KneeAlignment {kind} landmark schema v{schema.version}: {len(schema)} landmarks\n"
                 "right knee, radiological view (lateral on the viewer's left); bold = contour anchors",
                 fontsize=9)
    ax.set_xlabel("x (mm, medial →)")
    ax.set_ylabel("y (mm, distal ↓)")
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=6, framealpha=0.9)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
