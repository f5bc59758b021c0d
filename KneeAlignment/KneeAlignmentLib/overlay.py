"""Pictures for people: the landmark schema diagram and measurement overlays.

Measurement overlays (one per measured radiograph, so on every cohort's critical path) are
drawn with PIL: the radiograph resized once to the picture's pixels, the marks on a
supersampled transparent layer (antialiased), the text in DejaVu Sans Mono. The schema
diagram and contact sheets use matplotlib's object-oriented API on an Agg canvas (no
pyplot global state, no display), imported only there: importing matplotlib costs a
single-image `kneealign measure` a third of a second.
"""

from __future__ import annotations

import importlib.util
import struct
import textwrap
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import DISCLAIMER
from .atomicio import atomic_output
from .bundle.thresholds import DEFAULT as DEFAULT_QC  # weak landmarks are drawn as red crosses
from .case_view import AXIS_COLORS
from .schema import load_schema


def _figure(**kwargs):
    """A matplotlib Figure on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def draw_schema(kind: str, path: Path) -> Path:
    """Write a labelled diagram of the schema's template (a right knee) as a PNG."""
    schema = load_schema(kind)
    pts = schema.template_mm
    fig = _figure(figsize=(9, 12), dpi=150)
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
    ``status``: the bottom line (red when ``flagged``). The picture is ``height_px`` tall,
    the radiograph's proportions kept.
    """
    h, w = pixels.shape
    scale = height_px / h  # picture px per image px
    size = (max(1, round(w * scale)), height_px)
    dot = max(2.0, height_px / 400) * _PX_PER_PT  # marker size of the matplotlib overlay this replaces
    a = alignment
    axes = {} if a is None else {(method, bone): getattr(a, f"{bone}_axis_{method.lower()}_px")
                                 for method in AXIS_COLORS for bone in ("femoral", "tibial")}
    centres = [] if a is None else [a.femoral_shaft_centres_px, a.tibial_shaft_centres_px]
    drawn = ([] if landmarks is None else [landmarks[1]]) + list(axes.values()) + centres
    marks = _Marks(size, scale, drawn, reach_px=2.0 * dot)
    if landmarks is not None:
        kind, points, confidence = landmarks
        schema = load_schema(kind)
        for group, info in schema.groups.items():
            idx = schema.group_indices(group)
            low = (np.zeros(len(idx), bool) if confidence is None
                   else confidence[idx] < DEFAULT_QC.landmark_confidence_min)
            colour = _rgb(info["color"])
            marks.line(points[idx], colour + (178,), 1.1)  # the contour, 70 % opaque
            marks.dots(points[idx[~low]], colour + (255,), dot + 1.4)
            marks.crosses(points[idx[low]], _RED, 1.5 * dot, diagonal=True)
    for (method, _), axis in axes.items():
        marks.line(axis, _rgb(AXIS_COLORS[method]) + (255,), 2.8)
    for shaft in centres:
        marks.crosses(shaft, _rgb(AXIS_COLORS["FTS"]) + (255,), 2.0 * dot, diagonal=False)
    picture = _grey(pixels, size)
    layer = marks.image()
    picture.paste(layer, marks.origin, mask=layer)  # straight alpha: blended by its alpha channel
    lines = [f"aTFA FTS  {_label(a and a.atfa_fts_deg, a and a.label_fts)}",
             f"aTFA FNTS {_label(a and a.atfa_fnts_deg, a and a.label_fnts)}", *notes]
    _panel(picture, "\n".join(lines), "DejaVuSansMono.ttf", height_px / 90, (255, 255, 255), top=True)
    status = "\n".join(textwrap.wrap(status, width=max(30, int(70 * w / h))))
    _panel(picture, f"{status}\n{DISCLAIMER}", "DejaVuSans.ttf", height_px / 110,
           (255, 0, 0) if flagged else (255, 255, 255), top=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        temporary.write_bytes(_png(np.asarray(picture)))
    return path


_PX_PER_PT = 100 / 72  # the sizes above are those of the matplotlib overlay (points at 100 dpi)
_RED = (255, 0, 0, 255)
_SUPERSAMPLE = 2  # marks are drawn at twice the size and shrunk: antialiased edges


def _rgb(colour) -> tuple[int, int, int]:
    """(r, g, b) in [0, 1] -> 8-bit."""
    return tuple(int(round(255 * c)) for c in colour[:3])


class _Marks:
    """A transparent layer of lines and markers in image px, drawn supersampled with PIL.

    The layer covers only the box around the points to be drawn (``drawn``, image px),
    widened by ``reach_px`` (picture px) for markers and line widths: the marks of a knee
    take a fraction of the picture, and the supersampled layer is most of the drawing time.
    ``origin``: the layer's top left corner in the picture.
    """

    def __init__(self, size: tuple[int, int], scale: float, drawn: list[np.ndarray], reach_px: float) -> None:
        self.scale = scale
        xy = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in drawn] or [np.zeros((0, 2))])
        xy = (xy[np.isfinite(xy).all(axis=1)] + 0.5) * scale  # picture px
        if len(xy):
            low = np.clip(np.floor(xy.min(axis=0) - reach_px), 0, size).astype(int)
            high = np.clip(np.ceil(xy.max(axis=0) + reach_px), 0, size).astype(int)
        else:
            low = high = np.zeros(2, dtype=int)
        self.origin = (int(low[0]), int(low[1]))
        box = np.maximum(high - low, 1) * _SUPERSAMPLE
        self.layer = Image.new("RGBA", (int(box[0]), int(box[1])), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.layer)

    def _xy(self, points_px: np.ndarray) -> list[tuple[float, float]]:
        """Image px (pixel centres at integers) -> layer px."""
        xy = ((np.asarray(points_px, dtype=np.float64) + 0.5) * self.scale - self.origin) * _SUPERSAMPLE - 0.5
        return [tuple(p) for p in xy[np.isfinite(xy).all(axis=1)]]

    def line(self, points_px: np.ndarray, rgba: tuple, width_px: float) -> None:
        xy = self._xy(points_px)
        if len(xy) > 1:
            self.draw.line(xy, fill=rgba, width=max(1, round(width_px * _SUPERSAMPLE)), joint="curve")

    def dots(self, points_px: np.ndarray, rgba: tuple, diameter_px: float) -> None:
        r = diameter_px * _SUPERSAMPLE / 2
        for x, y in self._xy(points_px):
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=rgba)

    def crosses(self, points_px: np.ndarray, rgba: tuple, size_px: float, *, diagonal: bool) -> None:
        r, width = size_px * _SUPERSAMPLE / 2, round(1.4 * _SUPERSAMPLE)
        arms = ((-r, -r, r, r), (-r, r, r, -r)) if diagonal else ((-r, 0, r, 0), (0, -r, 0, r))
        for x, y in self._xy(points_px):
            for x0, y0, x1, y1 in arms:
                self.draw.line((x + x0, y + y0, x + x1, y + y1), fill=rgba, width=width)

    def image(self) -> Image.Image:
        # shrunk with premultiplied alpha, so edges do not darken towards the transparent background
        return self.layer.convert("RGBa").reduce(_SUPERSAMPLE).convert("RGBA")


def _grey(pixels: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The radiograph resized to ``size`` as RGB grey levels (256 levels over [0, 1]).

    PIL's bilinear filter, widened when shrinking (antialiased), on the float image.
    """
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    image = np.asarray(image.resize(size, Image.Resampling.BILINEAR))
    return Image.fromarray(np.clip(image * 256.0, 0.0, 255.0).astype(np.uint8), mode="L").convert("RGB")


def _panel(picture: Image.Image, text: str, font_file: str, size_pt: float, rgb: tuple[int, int, int], *,
           top: bool) -> None:
    """Text on a 60 % black box at the picture's top or bottom left corner (2 % in from its edges)."""
    font = _font(font_file, max(6, round(size_pt * _PX_PER_PT)))
    draw = ImageDraw.Draw(picture, "RGBA")  # on an RGB picture: blends the box's alpha
    pad = 0.3 * font.size
    x = 0.02 * picture.width + pad
    left, upper, right, lower = draw.multiline_textbbox((0, 0), text, font=font)
    y = 0.02 * picture.height + pad if top else 0.98 * picture.height - pad - lower
    draw.rectangle((x + left - pad, y + upper - pad, x + right + pad, y + lower + pad), fill=(0, 0, 0, 153))
    draw.multiline_text((x, y), text, font=font, fill=rgb + (255,))


@lru_cache(maxsize=8)
def _font(name: str, size_px: int) -> ImageFont.FreeTypeFont:
    """A DejaVu font shipped with matplotlib (found without importing it), else PIL's own font."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        file = Path(folder) / "mpl-data" / "fonts" / "ttf" / name
        if file.is_file():
            return ImageFont.truetype(str(file), size_px)
    return ImageFont.load_default(size_px)


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


def draw_contact_sheet(images, landmarks, kind: str, path: Path, *, columns: int = 4, tile_px: int = 320) -> Path:
    """A grid of radiographs, with their landmarks coloured by group when given.

    ``images``: (H, W) arrays (bright = dense); ``landmarks``: (K, 2) px per image, or
    None to show the images alone; ``kind``: the schema of the landmarks.
    """
    schema = load_schema(kind)
    rows = -(-len(images) // columns)
    aspect = images[0].shape[0] / images[0].shape[1]
    fig = _figure(figsize=(columns * tile_px / 100, rows * tile_px * aspect / 100), dpi=100)
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
