"""Pictures for people: the landmark schema diagram and measurement overlays.

Drawn with matplotlib's object-oriented API on an Agg canvas: no pyplot global state,
no display needed. Measurement overlays draw only the marks with matplotlib (on a
transparent canvas) and lay them over the radiograph resized once to the picture's
pixels: matplotlib resampling a 2000 x 1600 image costs several times as much.
"""

from __future__ import annotations

import struct
import textwrap
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import DISCLAIMER
from .atomicio import atomic_output
from .bundle.thresholds import DEFAULT as DEFAULT_QC  # weak landmarks are drawn as red crosses
from .case_view import AXIS_COLORS
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
    with atomic_output(path) as temporary:
        fig.savefig(temporary)
    return path


def _label(value: float | None, label: str | None) -> str:
    return "n/a" if value is None else f"{abs(value):.1f}° {label}"


def draw_measurement(pixels: np.ndarray, measurement, path: Path, *, height_px: int = 1400) -> Path:
    """Write the radiograph with landmarks (coloured by group), axes and angles as a PNG.

    ``pixels``: (H, W) the radiograph as measured (bright = dense); ``measurement``: a
    ``measurement.Measurement``. Flagged results say so in red.
    """
    lm = measurement.landmarks
    side = {"L": "left", "R": "right"}.get(measurement.side, "side unknown")
    model = measurement.local_model
    notes = [f"{side} knee ({measurement.side_source}), {measurement.kind or 'kind unknown'}",
             f"model {model.label}" if model else "no local model ran"]
    status = "OK" if measurement.status == "ok" else "FLAGGED: " + "; ".join(measurement.flag_codes)
    return draw_result(pixels, None if lm is None else (lm.schema, lm.points_px, lm.confidence),
                       measurement.alignment, notes, status, path, flagged=measurement.status != "ok",
                       height_px=height_px)


def draw_result(pixels: np.ndarray, landmarks, alignment, notes, status: str, path: Path, *,
                flagged: bool = False, height_px: int = 1400) -> Path:
    """The overlay itself: landmarks, the four axes, shaft centres and a text panel.

    ``landmarks``: (schema kind, (K, 2) px, (K,) confidence or None) or None;
    ``alignment``: geometry's Alignment or None; ``notes``: lines under the angles;
    ``status``: the bottom line (red when ``flagged``).
    """
    h, w = pixels.shape
    dpi = 100
    fig = Figure(figsize=(height_px * w / h / dpi + 0.01, height_px / dpi), dpi=dpi)
    fig.patch.set_alpha(0.0)  # the marks only; the radiograph goes under them in _compose
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_aspect("equal")  # as imshow had it: the picture keeps the image's proportions
    ax.patch.set_alpha(0.0)
    ax.set_axis_off()
    marker = max(2.0, height_px / 400)
    if landmarks is not None:
        kind, points, confidence = landmarks
        schema = load_schema(kind)
        for group, info in schema.groups.items():
            idx = schema.group_indices(group)
            low = (np.zeros(len(idx), bool) if confidence is None
                   else confidence[idx] < DEFAULT_QC.landmark_confidence_min)
            ax.plot(points[idx, 0], points[idx, 1], "-", color=info["color"], lw=0.8, alpha=0.7)
            ax.plot(points[idx[~low], 0], points[idx[~low], 1], "o", color=info["color"], ms=marker)
            ax.plot(points[idx[low], 0], points[idx[low], 1], "x", color="red", ms=marker * 1.5)
    a = alignment
    if a is not None:
        for method, color in AXIS_COLORS.items():
            for bone in ("femoral", "tibial"):
                axis = getattr(a, f"{bone}_axis_{method.lower()}_px")
                ax.plot(axis[:, 0], axis[:, 1], "-", color=color, lw=2.0)
        for centres in (a.femoral_shaft_centres_px, a.tibial_shaft_centres_px):
            ax.plot(centres[:, 0], centres[:, 1], "+", color=AXIS_COLORS["FTS"], ms=marker * 2)
    ax.set_xlim(-0.5, w - 0.5)  # the picture is the image, wherever stray points fall
    ax.set_ylim(h - 0.5, -0.5)
    lines = [f"aTFA FTS  {_label(a and a.atfa_fts_deg, a and a.label_fts)}",
             f"aTFA FNTS {_label(a and a.atfa_fnts_deg, a and a.label_fnts)}", *notes]
    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", family="monospace",
            fontsize=height_px / 90, color="white", bbox=dict(facecolor="black", alpha=0.6, edgecolor="none"))
    status = "\n".join(textwrap.wrap(status, width=max(30, int(70 * w / h))))
    ax.text(0.02, 0.02, f"{status}\n{DISCLAIMER}", transform=ax.transAxes, va="bottom", ha="left",
            fontsize=height_px / 110, color="red" if flagged else "white",
            bbox=dict(facecolor="black", alpha=0.6, edgecolor="none"))
    canvas.draw()
    picture = _compose(pixels, np.asarray(canvas.buffer_rgba()), ax.get_window_extent())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        temporary.write_bytes(_png(np.asarray(picture)))
    return path


def _png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes: every row "Up"-filtered, zlib level 1.

    A fifth of the time of the default encoding (zlib level 6, a filter chosen per row)
    for a file about 1.2 times larger.
    """
    h, w, _ = rgb.shape
    rows = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(h, w * 3)
    filtered = np.empty((h, w * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type Up: each byte less the byte above it (mod 256)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(filtered.tobytes(), 1))
            + chunk(b"IEND", b""))


def _compose(pixels: np.ndarray, marks: np.ndarray, box) -> Image.Image:
    """RGB picture: the radiograph resized into ``box`` (the axes, display px) on white, marks over it.

    ``marks``: (H, W, 4) uint8 RGBA of the Agg canvas (straight alpha, origin top left);
    ``box``: the axes' extent in display px (origin bottom left). The grey levels are
    those of matplotlib's "gray" colour map (256 levels over [0, 1]); the resize is PIL's
    bilinear filter, widened when shrinking (antialiased).
    """
    height, width = marks.shape[:2]
    x0, x1 = int(round(box.x0)), int(round(box.x1))
    y0, y1 = height - int(round(box.y1)), height - int(round(box.y0))
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    image = np.asarray(image.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
    grey = Image.fromarray(np.clip(image * 256.0, 0.0, 255.0).astype(np.uint8), mode="L")
    picture = Image.new("RGBA", (width, height), (255, 255, 255, 255))
    picture.paste(grey.convert("RGBA"), (x0, y0))
    return Image.alpha_composite(picture, Image.fromarray(marks, mode="RGBA")).convert("RGB")


def draw_contact_sheet(images, landmarks, kind: str, path: Path, *, columns: int = 4, tile_px: int = 320) -> Path:
    """A grid of radiographs, with their landmarks coloured by group when given.

    ``images``: (H, W) arrays (bright = dense); ``landmarks``: (K, 2) px per image, or
    None to show the images alone; ``kind``: the schema of the landmarks.
    """
    schema = load_schema(kind)
    rows = -(-len(images) // columns)
    aspect = images[0].shape[0] / images[0].shape[1]
    fig = Figure(figsize=(columns * tile_px / 100, rows * tile_px * aspect / 100), dpi=100)
    FigureCanvasAgg(fig)
    for i, image in enumerate(images):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="antialiased")
        ax.set_axis_off()
        if landmarks is not None:
            for info, idx in ((info, schema.group_indices(g)) for g, info in schema.groups.items()):
                ax.plot(landmarks[i][idx, 0], landmarks[i][idx, 1], ".-", color=info["color"], ms=1.5, lw=0.5)
    fig.subplots_adjust(0, 0, 1, 1, 0.01, 0.01)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        fig.savefig(temporary)
    return path
