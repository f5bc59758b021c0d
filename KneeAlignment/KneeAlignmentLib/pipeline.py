"""Two-stage inference: radiograph -> reference points -> knee crop -> landmarks -> Measurement.

Stages (after arXiv 2506.18209):

1. global: the whole image is letterboxed into the global network's input; its two
   heatmaps decode (``heatmaps.HeatmapCodec``) to the schema's reference points (knee
   centre, femoral shaft centre), mapped back to image pixels by the letterbox.
2. local: a ``frame.ReferenceFrame`` through the two points (the local bundle's
   ``FrameSpec``; left knees are mirrored so the network always sees a right knee)
   gives the crop; the local network's K heatmaps decode to crop pixels, and
   ``frame.to_image`` maps them back (no landmark pair swap: names are anatomical).
3. ``geometry.compute_alignment`` and quality control give a ``measurement.Measurement``.

Models: a ``bundle.modelset.ModelSet`` (which bundles: ``bundle.resolve``).

Network input (:func:`prepare_input`, to be shared with training): letterbox / crop
pixels in [0, 1] with 0 beyond the image, each image standardised to zero mean and unit
standard deviation.

Side (``measurement.decide_side``): the caller's when given, else the radiograph's own
(DICOM laterality), else detected; a given side contradicting the image's is flagged
``side_conflict``. Detection: the local stage runs on the crop as a right knee and
mirrored as a left knee.
The orientation whose landmarks put the fibula laterally (``geometry.infer_side`` agrees)
wins when only one does, else the one with the higher mean landmark confidence; flagged
``side_uncertain`` when anatomy and confidence disagree, both or neither orientation is
anatomically consistent, or the confidences are within ``side_confidence_margin``.

Kind ("auto"): both local models run; post-op when the post-op model's mean
confidence on the implant landmarks reaches ``kind_implant_confidence``, or where metal-like
pixels (at least ``metal_level`` of the image's 99.9th percentile) cover ``metal_postop_fraction``
of the knee crop although the implant landmarks are weak (flagged ``kind_uncertain``). A
post-op result with little metal-like area is flagged too.

Orientation: the predicted landmarks cannot show that an image is upside down or
mirrored (the local network fits an upright right knee to any crop, femur on top), so
the measured kind's local network also runs on the knee turned by 180 degrees as either
side, and mirrored where the side was given rather than detected; a view it is more
confident on flags the result ``orientation_suspected`` (``qc.orientation_flags``).
This costs two or three more local-network passes per image, and one more warp: where the
frame allows it (``FrameSpec.mirror_is_flip``, as training makes frames) a knee seen as the
other side is its crop flipped, not warped again (within 1e-4 of a warp; the same in
the local stage when the side is detected).

Quality control: every result lists its flags, most serious first (codes in
``qc.FLAG_ORDER``: failures, wrong view, side and kind doubts, implausible anatomy,
border positions, low confidence); any flag makes the status "flagged". Thresholds are
the bundles' (``bundle.thresholds.QCThresholds`` in each bundle's metadata, defaults when
absent): the global bundle's for the reference points, the post-op bundle's for the
kind decision, the result's local bundle's for everything else.

FTS axes: each shaft's midline is measured from its cortical edges in the image around
the predicted landmarks (``axis_check``, ``shaft_edges``); where that evidence is good
it gives the reported FTS axis, and the landmark FTS stays in ``Measurement.fts_axis``
as a cross-check (``axis_evidence_disagree`` when they differ).

Precision: float32. ``autocast=True`` (CUDA only) runs the networks in float16
autocast; it is acceptable only where it keeps aTFA within 0.05 degrees of float32 on a
validation set, which must be checked on a GPU for each trained model.

Everything is deterministic: networks in eval mode, no randomness, fixed decision order.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from . import qc
from .axis_check import refine_fts
from .bundle.modelset import ModelSet, StageModel
from .bundle.thresholds import DEFAULT as DEFAULT_QC
from .bundle.thresholds import QCThresholds
from .errors import BundleError, GeometryError
from .frame import Letterbox, ReferenceFrame
from .geometry import compute_alignment, infer_side
from .heatmaps import finite_items
from .imageio import Radiograph
from .measurement import Landmarks, Measurement, QCFlag, SideDecision, decide_side
from .schema import KINDS, LandmarkSchema, load_schema

__all__ = ["measure", "measure_batch", "prepare_input"]

FILL = 0.0  # network-input value beyond the image (air is dark: bright = dense)
_FLAT_STD = 1e-4  # an image whose pixel std (range [0, 1]) is below this counts as flat

_SIDES = ("R", "L")


# --- network input ------------------------------------------------------------------------

def prepare_input(images: torch.Tensor) -> torch.Tensor:
    """Network input from pixels: (B, H, W) in [0, 1] -> (B, 1, H, W) float32.

    Each image is standardised on its own (zero mean, unit standard deviation; a flat
    image, std below 1e-4, becomes zeros), so exposure and windowing matter less and batching cannot change
    any image's input. Training must feed its networks through this same function.
    """
    x = images.float()
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, correction=0)
    # A flat image's float32 std is rounding noise, not contrast: it gives zeros.
    flat = std < _FLAT_STD
    return torch.where(flat, 0.0, (x - mean) / torch.where(flat, 1.0, std)).unsqueeze(1)


# --- running networks ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Decoded:
    points: np.ndarray  # (N, K, 2) network-input px
    confidence: np.ndarray  # (N, K)
    finite: np.ndarray  # (N,) bool: the heatmaps were finite


def _run(stage: StageModel, images: Sequence[torch.Tensor], batch_size: int, autocast: bool) -> _Decoded:
    """Run ``stage`` on images (each (H, W) = its codec input) in batches and decode."""
    points, confidence, finite = [], [], []
    k = len(stage.schema) if stage.schema is not None else 2
    expected = (k, *stage.codec.heatmap_size)
    for start in range(0, len(images), batch_size):
        x = prepare_input(torch.stack(list(images[start:start + batch_size])))
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.float16, enabled=autocast):
            heatmaps = stage.network(x)
        if heatmaps.ndim != 5 or tuple(heatmaps.shape[2:]) != expected:
            raise BundleError(f"{stage.info.model_id} produced {tuple(heatmaps.shape)}; expected (B, S, {k}, "
                              f"{expected[1]}, {expected[2]})")
        heatmaps = heatmaps[:, -1].float()
        ok = finite_items(heatmaps)
        if not ok.all():  # non-finite maps (e.g. float16 overflow) decode as empty maps and are flagged
            heatmaps = torch.where(ok[:, None, None, None], heatmaps, 0.0)
        p, c = stage.codec.decode(heatmaps)
        points.append(p.double().cpu().numpy())
        confidence.append(c.double().cpu().numpy())
        finite.append(ok.cpu().numpy())
    return _Decoded(np.concatenate(points), np.concatenate(confidence), np.concatenate(finite))


def _pixels(radiograph: Radiograph, device: torch.device) -> torch.Tensor:
    """The radiograph's pixels as a tensor on ``device``: on the CPU its own (read-only) memory, not a copy."""
    if device.type != "cpu":
        return torch.tensor(radiograph.pixels, device=device)
    with warnings.catch_warnings():  # torch has no read-only tensors; nothing here writes to them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(radiograph.pixels)


class _Stopwatch:
    """Milliseconds per stage; waits for the GPU so the times are the real ones."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.ms = device, {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.ms[name] = self.ms.get(name, 0.0) + 1000.0 * (time.perf_counter() - start)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# --- the pipeline -------------------------------------------------------------------------

@dataclass
class _LocalRun:
    """The local stage on one image as one kind, in one orientation."""

    kind: str
    side: str
    frame: ReferenceFrame
    qc: QCThresholds = DEFAULT_QC  # the local bundle's, with the global bundle's reference-point threshold
    metal_fraction: float = 0.0
    points_px: np.ndarray | None = None  # (K, 2) image px
    confidence: np.ndarray | None = None  # (K,)
    finite: bool = True


def measure(radiograph: Radiograph, models: ModelSet, *, kind: str = "auto", side: str | None = None,
            device: str | torch.device | None = None, autocast: bool = False,
            progress: Callable[[float, str], None] | None = None) -> Measurement:
    """Measure one radiograph; see :func:`measure_batch` (this is a batch of one)."""
    return measure_batch([radiograph], models, kind=kind, side=side, device=device, batch_size=1,
                         autocast=autocast, progress=progress)[0]


def measure_batch(radiographs: Sequence[Radiograph], models: ModelSet, *, kind: str = "auto",
                  side: str | None = None, device: str | torch.device | None = None, batch_size: int = 8,
                  autocast: bool = False, progress: Callable[[float, str], None] | None = None
                  ) -> list[Measurement]:
    """Measure radiographs, running the networks on up to ``batch_size`` inputs at a time.

    Results equal those of :func:`measure` image by image (to the rounding of convolutions
    over a different batch size, about 1e-6 px on CPU). Failures on predicted
    landmarks (degenerate frame, geometry errors, non-finite outputs) give flagged
    results without angles, never exceptions.

    Args:
        radiographs: the images.
        models: a ModelSet.
        kind: "auto" (decide pre-op vs post-op), "preop" or "postop".
        side: "L"/"R" for every image (it wins over an image's laterality tag, which is then
            flagged ``side_conflict`` where it differs), or None: each image's tag, else detected.
        device: move the models there first (in place); None: where they are.
        batch_size: network batch size (>= 1).
        autocast: float16 autocast on CUDA (see the module docstring); CUDA only.
        progress: called as ``progress(fraction, message)`` after each network stage
            (fraction of the networks' work done, 0..1); an exception it raises (e.g. a
            cancellation) stops the measurement.

    Raises:
        ValueError: bad arguments. BundleError: ``kind`` has no local model.
    """
    radiographs = list(radiographs)
    if not all(isinstance(r, Radiograph) for r in radiographs):
        raise ValueError("radiographs must be Radiograph objects (see imageio.read_radiograph)")
    if kind not in ("auto", *KINDS):
        raise ValueError(f"kind must be 'auto', 'preop' or 'postop', got {kind!r}")
    if side not in (None, *_SIDES):
        raise ValueError(f"side must be 'L', 'R' or None, got {side!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if device is not None:
        models = models.to(device)
    if autocast and models.device.type != "cuda":
        raise ValueError(f"autocast is for CUDA only; the models are on {models.device}")
    if kind != "auto":
        models.local(kind)  # raises when the set has no such model
    kinds = models.kinds if kind == "auto" else (kind,)
    results = []
    for start in range(0, len(radiographs), batch_size):
        chunk = radiographs[start:start + batch_size]
        done = _Progress(progress, start / len(radiographs), len(chunk) / len(radiographs), len(kinds))
        results += _measure_chunk(chunk, models, kinds, kind, side, batch_size, autocast, done)
    return results


@dataclass(frozen=True)
class _Progress:
    """Reports a chunk's network stages (global, each local kind, the orientation check) as fractions of the call."""

    callback: Callable[[float, str], None] | None
    start: float
    share: float
    kinds: int

    def __call__(self, stages_done: int, message: str) -> None:
        if self.callback is not None:
            self.callback(self.start + self.share * stages_done / (2 + self.kinds), message)


def _measure_chunk(chunk: list[Radiograph], models: ModelSet, kinds: tuple[str, ...], kind: str,
                   side: str | None, batch_size: int, autocast: bool, progress: _Progress) -> list[Measurement]:
    watch = _Stopwatch(models.device)
    glob = models.global_model
    images = [_pixels(r, models.device) for r in chunk]  # (H, W) float32
    # metal-like is relative to the brightest structures (see metal_level): the 99.9th percentile,
    # robust to hot pixels and to the ringing of JPEG-compressed edges
    brightest = [float(np.percentile(r.pixels[::4, ::4], 99.9)) for r in chunk]
    with watch("global"):
        boxes = [Letterbox.fit(tuple(img.shape), glob.codec.input_size) for img in images]
        decoded = _run(glob, [box.apply(img, fill=FILL) for box, img in zip(boxes, images)], batch_size, autocast)
        refs = [box.to_image(points) for box, points in zip(boxes, decoded.points)]
    progress(1, "Reference points found")

    plans = [decide_side(side, r) for r in chunk]
    failures: dict[int, QCFlag] = {}
    runs: dict[int, list[_LocalRun]] = {i: [] for i in range(len(chunk))}
    with watch("local"):
        for i, plan in enumerate(plans):
            if not decoded.finite[i]:
                failures[i] = QCFlag("invalid_network_output", "the global network produced non-finite heatmaps")
                continue
            try:
                sides = (plan.side,) if plan.side else _SIDES  # unknown side: try both orientations
                runs[i] = [_LocalRun(k, s, ReferenceFrame.from_reference_points(refs[i], models.local(k).frame_spec, s),
                                     _thresholds(models, k))
                           for k in kinds for s in sides]
            except GeometryError as exc:
                failures[i] = QCFlag("frame_failed", f"no knee frame from the reference points: {exc}")
        crops = _Crops(images)
        for k in kinds:
            jobs = [(i, run) for i in runs for run in runs[i] if run.kind == k]
            inputs = [crops(i, refs[i], run.frame) for i, run in jobs]
            out = _run(models.local(k), inputs, batch_size, autocast) if jobs else None
            for j, ((i, run), crop) in enumerate(zip(jobs, inputs)):
                run.metal_fraction = float((crop >= run.qc.metal_level * brightest[i]).float().mean())
                run.points_px = run.frame.to_image(out.points[j])
                run.confidence, run.finite = out.confidence[j], bool(out.finite[j])
            progress(1 + kinds.index(k) + 1, f"{k.replace('op', '-op')} landmarks found")

    found, geometry_ms = [], []
    for i, radiograph in enumerate(chunk):
        start = time.perf_counter()
        found.append(_finish(radiograph, refs[i], decoded.confidence[i], runs[i], plans[i], failures.get(i), kind,
                             kinds))
        geometry_ms.append(1000.0 * (time.perf_counter() - start))
    with watch("orientation"):
        _check_orientation(crops, refs, found, plans, models, batch_size, autocast)
    progress(2 + len(kinds), "Orientation checked")

    used = (glob.info, *(models.local(k).info for k in kinds))
    shared = {name: ms / len(chunk) for name, ms in watch.ms.items()}
    precision = "float16 autocast" if autocast else "float32"
    results = []
    for i, radiograph in enumerate(chunk):
        parts = found[i]
        timings = {**shared, "geometry": geometry_ms[i]}
        timings["total"] = sum(timings.values())
        results.append(Measurement(image_shape=radiograph.shape, spacing_mm=radiograph.spacing_mm,
                                   spacing_source=radiograph.spacing_source, models=used, timings_ms=timings,
                                   device=str(models.device), precision=precision, **parts))
    return results


class _Crops:
    """Knee crops of a chunk's images, each warped once.

    Kinds whose bundles share a frame share its crops, and where the frame allows it
    (``FrameSpec.mirror_is_flip``) a knee seen as the other side is its crop flipped, not
    warped again.
    """

    def __init__(self, images: list[torch.Tensor]) -> None:
        self.images = images
        self._by_view: dict[tuple, dict[str, torch.Tensor]] = {}

    def __call__(self, i: int, ref: np.ndarray, frame: ReferenceFrame) -> torch.Tensor:
        sides = self._by_view.setdefault((i, ref.tobytes(), frame.spec), {})
        if frame.side not in sides:
            other = sides.get("L" if frame.side == "R" else "R")
            flip = other is not None and frame.spec.mirror_is_flip
            sides[frame.side] = other.flip(-1) if flip else frame.warp(self.images[i], fill=FILL)
        return sides[frame.side]


def _check_orientation(crops: _Crops, refs: list[np.ndarray], found: list[dict],
                       plans: list[SideDecision], models: ModelSet, batch_size: int, autocast: bool) -> None:
    """Run the measured kind's local network on the knee turned by 180 degrees (as either
    side) and, where the side was not detected, mirrored; add ``qc.orientation_flags``."""
    jobs: list[tuple[int, str, np.ndarray, ReferenceFrame]] = []
    for i, parts in enumerate(found):
        if parts.get("landmarks") is None:
            continue
        kind, side = parts["kind"], parts["side"]
        other = "L" if side == "R" else "R"
        turned = refs[i].copy()
        turned[1] = 2.0 * turned[0] - turned[1]  # the femoral shaft point reflected through the knee centre
        views = [(f"turned by 180 degrees (as a {_SIDE_WORD[side]} knee)", turned, side),
                 (f"flipped top to bottom (as a {_SIDE_WORD[other]} knee)", turned, other)]
        if plans[i].side is not None:  # a detected side already compared both sides
            views.append((f"mirrored (as a {_SIDE_WORD[other]} knee, against the image's side {side})",
                          refs[i], other))
        spec = models.local(kind).frame_spec
        for what, ref, view_side in views:
            try:
                jobs.append((i, what, ref, ReferenceFrame.from_reference_points(ref, spec, view_side)))
            except GeometryError:
                continue
    for kind in models.kinds:
        mine = [job for job in jobs if found[job[0]]["kind"] == kind]
        if not mine:
            continue
        out = _run(models.local(kind), [crops(i, ref, frame) for i, _, ref, frame in mine], batch_size, autocast)
        alternatives: dict[int, dict[str, float]] = {}
        for j, (i, what, _, _) in enumerate(mine):
            alternatives.setdefault(i, {})[what] = float(out.confidence[j].mean()) if out.finite[j] else 0.0
        for i, views in alternatives.items():
            measured = found[i]["evidence"]["mean_confidence"]
            found[i]["evidence"]["orientation_margin"] = measured - max(views.values())
            flags = qc.orientation_flags(measured, views, _thresholds(models, kind))
            if flags and not any(f.code == "orientation_suspected" for f in found[i]["qc_flags"]):
                found[i]["qc_flags"] = qc.ordered([*found[i]["qc_flags"], *flags])


_SIDE_WORD = {"R": "right", "L": "left"}


def _finish(radiograph: Radiograph, ref_px: np.ndarray, ref_conf: np.ndarray, runs: list[_LocalRun],
            plan: SideDecision, failure: QCFlag | None, kind_request: str, kinds: tuple[str, ...]) -> dict:
    """Decide side and kind, then geometry and QC: the Measurement fields of one image."""
    flags = list(plan.flags)
    evidence: dict[str, float] = {}
    parts = dict(reference_points_px=ref_px, reference_confidence=ref_conf)
    if failure is not None:
        flags.append(failure)
        return parts | dict(side=plan.side, side_source=plan.source if plan.side else "undetermined",
                            kind=None if kind_request == "auto" else kind_request,
                            kind_source="undetermined" if kind_request == "auto" else "given",
                            landmarks=None, alignment=None, qc_flags=qc.ordered(flags), evidence=evidence)

    chosen, side_notes = {}, {}
    for k in kinds:
        by_side = {run.side: run for run in runs if run.kind == k}
        if plan.side is not None:
            chosen[k], side_notes[k] = by_side[plan.side], []
        else:
            chosen[k], side_notes[k] = _choose_side(by_side, load_schema(k), evidence)

    if kind_request != "auto":
        kind, kind_source = kind_request, "given"
    elif len(kinds) == 1:
        kind, kind_source = kinds[0], "only model available"
    else:
        kind, note = _choose_kind(chosen, evidence)
        kind_source = "detected"
        if note:
            flags.append(QCFlag("kind_uncertain", note))
    run = chosen[kind]
    schema = load_schema(kind)
    if side_notes[kind]:
        flags.append(QCFlag("side_uncertain", "; ".join(side_notes[kind])))
    evidence["metal_fraction"] = run.metal_fraction
    if kind == "postop" and run.metal_fraction < run.qc.metal_area_fraction:
        flags.append(QCFlag("kind_uncertain", f"post-op landmarks, but metal-like (brightest) pixels cover only "
                                              f"{run.metal_fraction:.1%} of the knee crop"))
    parts |= dict(side=run.side, side_source=plan.source, kind=kind, kind_source=kind_source)
    if not run.finite:
        flags.append(QCFlag("invalid_network_output", f"the local {kind} network produced non-finite heatmaps"))
        return parts | dict(landmarks=None, alignment=None, qc_flags=qc.ordered(flags), evidence=evidence)

    landmarks = Landmarks(kind, schema.version, schema.names, run.points_px, run.confidence)
    evidence["mean_confidence"] = float(run.confidence.mean())
    flags += qc.confidence_flags(landmarks, ref_conf, run.qc)
    flags += qc.border_flags(radiograph.shape, ref_px, landmarks, run.qc)
    try:
        alignment = compute_alignment(run.points_px, schema, run.side, radiograph.spacing_mm)
    except GeometryError as exc:
        alignment = None
        flags.append(QCFlag("geometry_failed", f"no angles from the predicted landmarks: {exc}"))
    fts_axis = None
    if alignment is not None:
        alignment, fts_axis, axis_flags = refine_fts(radiograph.pixels, run.points_px, schema, run.side,
                                                     radiograph.spacing_mm, alignment, run.qc)
        flags += axis_flags + qc.anatomy_flags(alignment, landmarks, schema, radiograph.spacing_mm, run.qc)
    return parts | dict(landmarks=landmarks, alignment=alignment, qc_flags=qc.ordered(flags), evidence=evidence,
                        fts_axis=fts_axis)


def _choose_side(by_side: dict[str, _LocalRun], schema: LandmarkSchema,
                 evidence: dict[str, float]) -> tuple[_LocalRun, list[str]]:
    """Pick the orientation (see the module docstring); returns it and reasons for doubt."""
    mean = {s: float(by_side[s].confidence.mean()) if by_side[s].finite else 0.0 for s in _SIDES}
    anatomy = {}
    for s in _SIDES:
        try:
            anatomy[s] = infer_side(by_side[s].points_px, schema) if by_side[s].finite else None
        except GeometryError:
            anatomy[s] = None
    evidence[f"{schema.kind}_confidence_as_right"] = mean["R"]
    evidence[f"{schema.kind}_confidence_as_left"] = mean["L"]
    consistent = [s for s in _SIDES if anatomy[s] == s]
    by_confidence = "R" if mean["R"] >= mean["L"] else "L"
    side = consistent[0] if len(consistent) == 1 else by_confidence
    notes = []
    if len(consistent) != 1:
        where = "both as a right and as a left knee" if consistent else "in neither orientation"
        notes.append(f"the fibula comes out lateral {where}")
    elif side != by_confidence:
        notes.append("the orientation with the fibula lateral has the lower landmark confidence")
    margin = by_side["R"].qc.side_confidence_margin
    if abs(mean["R"] - mean["L"]) < margin:
        notes.append(f"mean landmark confidence as a right knee ({mean['R']:.2f}) and as a left knee "
                     f"({mean['L']:.2f}) are close")
    return by_side[side], notes


@lru_cache(maxsize=None)
def _implant_indices() -> np.ndarray:
    """(M,) post-op landmarks that the pre-op schema lacks: the implant components."""
    preop = set(load_schema("preop").names)
    return np.array([i for i, name in enumerate(load_schema("postop").names) if name not in preop])


def _choose_kind(chosen: dict[str, _LocalRun], evidence: dict[str, float]) -> tuple[str, str]:
    """'preop' or 'postop' from the post-op model's implant confidence; returns (kind, doubt or '')."""
    postop = chosen["postop"]
    threshold, margin = postop.qc.kind_implant_confidence, postop.qc.kind_confidence_margin
    implant = float(postop.confidence[_implant_indices()].mean()) if postop.finite else 0.0
    evidence["implant_confidence"] = implant
    kind = "postop" if implant >= threshold else "preop"
    note = ""
    if abs(implant - threshold) < margin:
        note = f"implant landmark confidence {implant:.2f} is close to the threshold {threshold}"
    if kind == "preop" and postop.metal_fraction >= postop.qc.metal_postop_fraction:
        kind = "postop"  # metal in plain view outweighs weak implant landmarks (real films look unlike phantoms)
        note = (f"metal-like pixels cover {postop.metal_fraction:.0%} of the knee crop, but the implant landmarks' "
                f"confidence is only {implant:.2f}")
    return kind, note


def _thresholds(models: ModelSet, kind: str) -> QCThresholds:
    """The local ``kind`` bundle's thresholds, with the global bundle's for the reference points."""
    return dataclasses.replace(models.local(kind).qc,
                               global_confidence_min=models.global_model.qc.global_confidence_min)
