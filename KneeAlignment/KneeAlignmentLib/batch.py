"""Cohort-scale measurement: many radiographs in, result files per case and one summary out.

Inputs (:func:`discover_inputs`): files, and folders searched recursively (sorted, hidden
folders and the output folder left out). A file named on the command line is always
measured; a file found in a folder is skipped, with the reason in the summary, when it
is not an image: a DICOMDIR, a non-image DICOM object (SR, presentation state, ...), a
hidden file, or content that is no image format the reader knows (decided from the
first bytes and the extension, not the extension alone).

Case ids are "case-" + the first 12 hex digits of the SHA-256 of the input's key: its
path relative to the folder it was found in, or its file name for a file argument
(a second input with the same key gets "#2" appended to the key, and so on). They are
stable across runs, resumes and shards, and never contain the file name, which often
names the patient: input names are written only with ``keep_names``. (A hash of a
name is a pseudonym, not anonymisation.)

Outputs in the output folder, each written atomically (``atomicio``)::

    <case>.json         Measurement JSON            (ok and flagged cases)
    <case>.mrk.json     Slicer markups              (cases with landmarks)
    <case>.png          overlay picture (the image's height, within OVERLAY_HEIGHT_PX)
    <case>.sr.dcm       DICOM SR, TID 1500          (``dicom_results`` and DICOM input)
    <case>.sc.dcm       overlay as DICOM Secondary Capture (same)
    summary.csv         one row per input, in input order (rank 0 writes it), after the
                        rows of earlier runs' cases that this run did not measure
    .kneealign-done/<case>.json   completion marker: removed when a case starts, written
                        after its last output; holds the case's summary row, a
                        fingerprint (input size and modification time, models,
                        software version, options) and the SHA-256 of the input's
                        absolute path

One output folder holds one input per case id. Two folders given in two runs can hold
files with the same relative path (``a/P.dcm``, ``b/P.dcm``), hence the same case id: a
run whose case id belongs to another input's results in the output folder is refused
before anything is written (``OutputConflictError``), with or without ``resume``, so no
run replaces another input's results.

With ``resume`` a case whose marker matches the fingerprint and whose outputs all exist
is not measured again; its row comes from the marker. Cases that ended in an error
have no marker (and no outputs): a resumed run tries them again.

Summary columns: ``measurement.csv_header()``; status is "ok", "flagged", "error"
(the input could not be read or measured, or its results not written; ``reason``
says why) or "skipped" (not an image). Errors never stop the batch.

Reading, measuring and writing overlap: a ``torch.utils.data.DataLoader`` with ``workers``
processes reads the images and, with models on the CPU, measures them, a batch per
worker at a time (on a GPU the main process measures), and a writer thread draws and
writes each batch's outputs in input order. Nothing per case is kept but its summary
row, so memory stays flat over long runs.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import hashlib
import io
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from torch.utils.data import DataLoader, Dataset

from . import __version__
from .atomicio import write_atomic
from .bundle.modelset import ModelSet
from .errors import KneeAlignmentError, OutputConflictError
from .imageio import FORMAT_SIGNATURES  # the reader's own table: one list of recognised formats
from .imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, Radiograph, quiet_pydicom, read_radiograph, with_given_spacing
from .measurement import Measurement, csv_header, write_markups
from .pipeline import measure_batch
from .schema import KINDS
from .sharding import Shard
from .workers import worker_init

__all__ = [
    "MARKER_DIR",
    "SUMMARY_FILE",
    "BatchOptions",
    "BatchSummary",
    "CaseRecord",
    "InputFile",
    "discover_inputs",
    "read_summary",
    "run_batch",
]

SUMMARY_FILE = "summary.csv"
MARKER_DIR = ".kneealign-done"
STATUSES = ("ok", "flagged", "error", "skipped")

_MAGIC = tuple(magic for magic, _, _ in FORMAT_SIGNATURES)
# DICOM objects that carry no image to measure.
_NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "SEG", "REG", "RWV", "DOC", "PLAN", "FID", "RTSTRUCT",
                                   "RTPLAN", "RTDOSE", "RTRECORD", "AU", "ECG", "HD"})
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# What a case may write, besides its marker.
_OUTPUT_SUFFIXES = (".json", ".mrk.json", ".png", ".sr.dcm", ".sc.dcm")
# Overlay height: the image's own, within these bounds (no upscaling of small images past the lower one).
OVERLAY_HEIGHT_PX = (400, 1400)
# Overlay figures are reference cycles holding their canvases; Python's full collections are
# rare, so the batch collects every this many cases to keep memory flat.
_COLLECT_EVERY = 16


# --- inputs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputFile:
    """One input of a batch.

    Attributes:
        case_id: "case-" + 12 hex digits (see the module docstring).
        path: the file.
        key: what the case id is derived from (relative path or file name); kept in
            memory only, never written.
        skip_reason: why the file is not an image, or None to measure it.
    """

    case_id: str
    path: Path
    key: str
    skip_reason: str | None = None


def _case_id(key: str) -> str:
    return "case-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def discover_inputs(paths: Iterable[str | os.PathLike[str]], *,
                    exclude: Iterable[str | os.PathLike[str]] = ()) -> list[InputFile]:
    """The inputs named by ``paths``, in order (see the module docstring).

    Args:
        paths: files and folders. A path that does not exist is kept as an input (its
            reading fails and is reported as that case's error).
        exclude: folders not to search (the output folder).

    A file reached twice (named twice, or inside two named folders) is measured once.
    """
    excluded = {_resolved(Path(p)) for p in exclude}
    found: list[tuple[Path, str, str | None]] = []  # (path, key, skip reason)
    for argument in map(Path, paths):
        if argument.is_dir():
            if _resolved(argument) in excluded:
                raise ValueError(f"{argument} is the output folder; write the results elsewhere (e.g. a subfolder)")
            for path in _walk(argument, excluded):
                found.append((path, path.relative_to(argument).as_posix(), _skip_reason(path)))
        else:
            found.append((argument, argument.name, None))
    inputs, seen_paths, key_counts = [], set(), Counter()
    for path, key, reason in found:
        resolved = _resolved(path)
        if resolved in seen_paths:
            continue
        seen_paths.add(resolved)
        key_counts[key] += 1
        if key_counts[key] > 1:
            key = f"{key}#{key_counts[key]}"
        inputs.append(InputFile(_case_id(key), path, key, reason))
    return inputs


def _resolved(path: Path) -> Path:
    """The path with symbolic links resolved; a link that loops or cannot be followed stays as it is
    (its reading then fails as that input's error)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return Path(os.path.abspath(path))


def _walk(root: Path, excluded: set[Path]) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _resolved(here / d) not in excluded)
        for name in sorted(files):
            yield here / name


def _skip_reason(path: Path) -> str | None:
    """Why a file found in a folder is not an image; None when it is (or may be) one."""
    name = path.name
    if name.upper() == "DICOMDIR":
        return "DICOMDIR (a DICOM media index, not an image)"
    if name.startswith("."):
        return "hidden file"
    try:
        with path.open("rb") as stream:
            head = stream.read(132)
    except OSError:
        return None  # the reader reports it as this case's error
    if head[128:132] == b"DICM":
        return _dicom_skip_reason(path)
    if name.lower().endswith(IMAGE_SUFFIXES) or head.startswith(_MAGIC):  # a damaged one: an error
        return None
    # A DICOM dataset without preamble starts with a group 0x0002 or 0x0008 tag (little endian).
    if head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) >= 8:
        return None
    return "not an image file (unrecognised content)"


def _dicom_skip_reason(path: Path) -> str | None:
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
        modality, sop_class = str(ds.get("Modality", "")).upper(), str(ds.get("SOPClassUID", ""))
    except Exception:  # noqa: BLE001 - a damaged file is left to the reader, which reports it as the case's error
        return None
    if sop_class == _MEDIA_STORAGE_DIRECTORY:
        return "DICOMDIR (a DICOM media index, not an image)"
    if modality in _NON_IMAGE_MODALITIES:
        return f"DICOM {modality} object, not an image"
    return None


# --- reading in data-loader workers ------------------------------------------------------------

@dataclass(frozen=True)
class _Read:
    """What a worker hands over for one input: the image, or why there is none."""

    index: int
    radiograph: Radiograph | None
    error: str | None


class _ReadDataset(Dataset):
    """Input i -> ``_Read``; runs in DataLoader workers (or the main process without workers)."""

    def __init__(self, inputs: Sequence[InputFile], max_pixels: int,
                 spacing_mm: tuple[float, float] | None = None) -> None:
        self.inputs, self.max_pixels, self.spacing_mm = list(inputs), max_pixels, spacing_mm

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> _Read:
        try:
            radiograph = read_radiograph(self.inputs[index].path, max_pixels=self.max_pixels)
            radiograph, error = with_given_spacing(radiograph, self.spacing_mm), None
        except KneeAlignmentError as exc:
            radiograph, error = None, str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop the batch (reader bug)
            radiograph, error = None, f"unexpected {type(exc).__name__} while reading (please report)"
        return _Read(index, radiograph, error)


_Batch = tuple[list[_Read], "dict[int, Measurement | str] | None"]


def _as_list(batch: list[_Read]) -> _Batch:
    """DataLoader collate function: a batch stays a list (images differ in size), not yet measured."""
    return batch, None


@dataclass(frozen=True)
class _Measuring:
    """DataLoader collate function that measures the batch where it was read: in a worker process."""

    models: ModelSet
    options: BatchOptions

    def __call__(self, batch: list[_Read]) -> _Batch:
        return batch, _measure([read for read in batch if read.radiograph is not None], self.models, self.options)


def _reader(inputs: Sequence[InputFile], options: BatchOptions, models: ModelSet | None = None) -> DataLoader:
    """Batches of (``_Read`` list, results or None) from ``options.workers`` processes, which die with this one.

    Given models on the CPU, the workers measure too (one thread each, as data-loader
    workers run torch), so as many batches are measured at once as there are workers and
    the main process only writes; results are then by input index, as :func:`_measure`
    gives them. A GPU cannot be shared with forked workers: there they only read, and
    results is None.
    """
    measuring = options.workers > 0 and models is not None and models.device.type == "cpu"
    return DataLoader(_ReadDataset(inputs, options.max_pixels, options.spacing_mm), batch_size=options.batch_size,
                      num_workers=options.workers, collate_fn=_Measuring(models, options) if measuring else _as_list,
                      prefetch_factor=2 if options.workers else None,
                      worker_init_fn=worker_init() if options.workers else None)


# --- options, records, summary -----------------------------------------------------------------

@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs.

    Attributes:
        kind, side: as ``pipeline.measure_batch`` takes them.
        spacing_mm: (row_mm, col_mm) for inputs whose file carries no spacing
            (``imageio.with_given_spacing``: an input whose own spacing differs is an error).
        batch_size: images per network batch (>= 1).
        workers: DataLoader processes reading images and, with models on the CPU, measuring
            them (0: everything in the main process).
        keep_names: record input file names in results and the summary.
        dicom_results: write ``<case>.sr.dcm`` and ``<case>.sc.dcm`` for DICOM inputs.
        resume: skip cases whose completion marker matches (see the module docstring).
        progress: show a progress bar (rate, ETA) on stderr.
        max_pixels: larger images are refused before decoding.
    """

    kind: str = "auto"
    side: str | None = None
    spacing_mm: tuple[float, float] | None = None
    batch_size: int = 2
    workers: int = 2
    keep_names: bool = False
    dicom_results: bool = False
    resume: bool = False
    progress: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.kind not in ("auto", *KINDS):
            raise ValueError(f"kind must be 'auto', 'preop' or 'postop', got {self.kind!r}")
        if self.side not in (None, "L", "R"):
            raise ValueError(f"side must be 'L', 'R' or None, got {self.side!r}")
        if self.spacing_mm is not None:
            spacing = tuple(self.spacing_mm)
            if len(spacing) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                            and 0 < v < float("inf") for v in spacing):
                raise ValueError(f"spacing_mm must be two positive numbers (row_mm, col_mm), got {self.spacing_mm!r}")
            object.__setattr__(self, "spacing_mm", tuple(float(v) for v in spacing))
        for name, low in (("batch_size", 1), ("workers", 0), ("max_pixels", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class CaseRecord:
    """The outcome of one input.

    Attributes:
        case_id, input_name (None unless ``keep_names``), status (see STATUSES), reason.
        row: its summary row (strings, ``measurement.csv_header()`` order).
        measurement: the result when measured in this run (None for errors, skips and
            resumed cases); callbacks may use it, the batch does not keep it.
        resumed: True when taken from a completion marker.
    """

    case_id: str
    input_name: str | None
    status: str
    reason: str
    row: tuple[str, ...]
    measurement: Measurement | None = None
    resumed: bool = False


@dataclass(frozen=True)
class BatchSummary:
    """A finished batch. On rank 0 of a sharded run, ``rows`` and ``counts`` cover every shard.

    Attributes:
        rows: summary rows in input order (this shard's only, on ranks other than 0).
        counts: cases per status, plus "resumed".
        elapsed_s: wall time of this process's shard; measured: cases measured in this run by this process.
    """

    rows: tuple[tuple[str, ...], ...]
    counts: dict[str, int]
    elapsed_s: float
    measured: int

    @property
    def failed(self) -> bool:
        """Whether any input ended in an error."""
        return self.counts.get("error", 0) > 0

    @property
    def images_per_s(self) -> float:
        return self.measured / self.elapsed_s if self.elapsed_s > 0 else 0.0


_STATUS_COLUMN = csv_header().index("status")


def _row(case_id: str, input_name: str | None, status: str, reason: str) -> tuple[str, ...]:
    values = dict(case_id=case_id, input_name=input_name or "", status=status, reason=reason,
                  software_version=__version__)
    return tuple(values.get(column, "") for column in csv_header())


def _summary_text(rows: Iterable[Sequence[str]]) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(csv_header())
    writer.writerows(rows)
    return stream.getvalue()


def read_summary(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a summary CSV as dicts keyed by column name."""
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


# --- completion markers ---------------------------------------------------------------------

def _fingerprint(item: InputFile, models: ModelSet, options: BatchOptions) -> dict:
    try:
        stat = item.path.stat()
        source = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except OSError:
        source = None
    used = [models.global_model.info.model_id, *(models.local(k).info.model_id for k in models.kinds)]
    return {"case_id": item.case_id, "source": source, "software_version": __version__, "models": used,
            "kind": options.kind, "side": options.side, "keep_names": options.keep_names,
            "dicom_results": options.dicom_results,
            **({"spacing_mm": list(options.spacing_mm)} if options.spacing_mm else {})}


def _resumed(item: InputFile, out_dir: Path, fingerprint: dict) -> CaseRecord | None:
    """The record in a matching marker whose outputs all exist, else None."""
    try:
        marker = json.loads((out_dir / MARKER_DIR / f"{item.case_id}.json").read_text(encoding="utf-8"))
        row, outputs = tuple(marker["row"]), marker["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if marker.get("fingerprint") != fingerprint or fingerprint["source"] is None or len(row) != len(csv_header()):
        return None
    if not all(isinstance(name, str) and (out_dir / name).is_file() for name in outputs):
        return None
    names = dict(zip(csv_header(), row))
    return CaseRecord(item.case_id, names["input_name"] or None, names["status"], names["reason"], row, None, True)


def _input_id(item: InputFile) -> str:
    """SHA-256 of the input's absolute path: which input a case's results belong to (never the path itself)."""
    return hashlib.sha256(os.path.abspath(item.path).encode("utf-8", "surrogateescape")).hexdigest()


def _refuse_other_inputs(inputs: Sequence[InputFile], out_dir: Path) -> None:
    """Raise OutputConflictError when a case id of ``inputs`` holds another input's results in ``out_dir``."""
    clashes = []
    for item in inputs:
        if item.skip_reason is not None:
            continue
        try:
            marker = json.loads((out_dir / MARKER_DIR / f"{item.case_id}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        recorded = marker.get("input") if isinstance(marker, dict) else None
        if isinstance(recorded, str) and recorded != _input_id(item):
            clashes.append(item.case_id)
    if clashes:
        shown = ", ".join(clashes[:3]) + (" ..." if len(clashes) > 3 else "")
        raise OutputConflictError(
            f"the output folder already holds results of other inputs under the case ids of {len(clashes)} of "
            f"these inputs ({shown}): case ids come from each file's path relative to the folder given, and "
            f"another folder measured into it earlier has files with the same relative paths. Nothing was "
            f"written; measure into a new output folder, or remove those cases' results first.")


def _earlier_rows(out_dir: Path, measured_now: set[str]) -> list[tuple[str, ...]]:
    """Rows of the existing summary whose cases this run does not cover (kept, never dropped)."""
    header = csv_header()
    try:
        rows = read_summary(out_dir / SUMMARY_FILE)
    except (OSError, ValueError, csv.Error):
        return []
    return [tuple(row.get(column) or "" for column in header) for row in rows
            if row.get("case_id") and row["case_id"] not in measured_now]


# --- writing one case ---------------------------------------------------------------------------

def _write_case(item: InputFile, radiograph: Radiograph, result: Measurement, out_dir: Path,
                options: BatchOptions, fingerprint: dict) -> None:
    """Write a case's outputs, then its marker; on failure remove what was written and raise."""
    from .overlay import draw_measurement

    case = item.case_id
    written: list[Path] = []
    try:
        written.append(write_atomic(out_dir / f"{case}.json", result.to_json() + "\n"))
        if result.landmarks is not None:
            written.append(write_markups(result, out_dir, case))
        low, high = OVERLAY_HEIGHT_PX
        height = min(high, max(low, radiograph.shape[0]))
        written.append(draw_measurement(radiograph.pixels, result, out_dir / f"{case}.png", height_px=height))
        if options.dicom_results and radiograph.source_format == "DICOM":
            written += _write_dicom_results(item, result, out_dir / f"{case}.png", out_dir)
        marker = {"fingerprint": fingerprint, "input": _input_id(item), "row": list(result.to_csv_row()),
                  "outputs": [path.name for path in written]}
        write_atomic(out_dir / MARKER_DIR / f"{case}.json", json.dumps(marker, indent=1) + "\n")
    except BaseException:
        for path in written:
            with suppress(OSError):
                path.unlink()
        raise


def _write_dicom_results(item: InputFile, result: Measurement, overlay_png: Path, out_dir: Path) -> list[Path]:
    from PIL import Image

    from .dicom_results import source_reference, write_measurement_sr, write_overlay_sc

    source = source_reference(item.path)
    sr = write_measurement_sr(out_dir / f"{item.case_id}.sr.dcm", result, source)
    with Image.open(overlay_png) as picture:
        rgb = np.asarray(picture.convert("RGB"))
    return [sr, write_overlay_sc(out_dir / f"{item.case_id}.sc.dcm", rgb, result, source)]


def _forget(case: str, out_dir: Path) -> None:
    """Before (re)measuring a case: drop its marker, earlier outputs and temporaries an interrupted run left."""
    paths = [out_dir / MARKER_DIR / f"{case}.json", *(out_dir / f"{case}{suffix}" for suffix in _OUTPUT_SUFFIXES)]
    for folder in (out_dir, out_dir / MARKER_DIR):
        paths += folder.glob(f".{case}.*")
    for path in paths:
        with suppress(OSError):
            path.unlink(missing_ok=True)


def _write_error(exc: Exception) -> str:
    if isinstance(exc, OSError):  # no path: the folder may name a patient
        return f"cannot write the results ({exc.strerror or type(exc).__name__})"
    if isinstance(exc, KneeAlignmentError):
        return f"cannot write the results: {exc}"
    return f"unexpected {type(exc).__name__} while writing the results (please report)"


# --- the batch -------------------------------------------------------------------------------------

def run_batch(inputs: Sequence[InputFile], models: ModelSet, out_dir: str | os.PathLike[str] | None = None,
              options: BatchOptions = BatchOptions(), *, shard: Shard = Shard(),
              on_case: Callable[[CaseRecord], None] | None = None) -> BatchSummary:
    """Measure ``inputs`` (this shard's share), write outputs to ``out_dir`` and the summary.

    Args:
        inputs: from :func:`discover_inputs` (every rank passes the same list).
        models: the model set (on this rank's device).
        out_dir: output folder (created); None writes nothing (``on_case`` sees results).
        options: see :class:`BatchOptions`.
        shard: this process's rank among those sharing the batch (``Shard.from_env()``
            under torchrun); rank 0 gathers all rows and writes ``summary.csv``.
        on_case: called with each case's record as it finishes: skipped and resumed cases
            first, then the measured ones in input order.

    Returns the summary; on rank 0 it covers all shards. Every failure of an input (reading,
    measuring, writing its results) becomes its "error" row.

    Raises:
        ValueError: bad arguments, or ranks that found different inputs.
        BundleError: ``options.kind`` names a schema the models lack.
        OutputConflictError: ``out_dir`` holds another input's results under one of these case ids.
        OSError: the output folder or the summary cannot be written.
    """
    out = None if out_dir is None else Path(out_dir)
    if options.resume and out is None:
        raise ValueError("resume needs an output folder")
    if shard.distributed and out is None:
        raise ValueError("a sharded run needs an output folder: every rank writes its cases there")
    if options.kind != "auto":
        models.local(options.kind)  # BundleError now rather than for every image
    if out is not None:
        _refuse_other_inputs(inputs, out)
        (out / MARKER_DIR).mkdir(parents=True, exist_ok=True)
    made_group = shard.join()
    try:
        shard.check_same_inputs([item.case_id for item in inputs])
        mine = shard.select(list(enumerate(inputs)))
        start = time.perf_counter()
        records = _run_shard(mine, models, out, options, shard, on_case)
        elapsed = time.perf_counter() - start
        gathered = shard.gather(records)
    finally:
        shard.leave(made_group)
    measured = sum(1 for _, record in records if record.status in ("ok", "flagged") and not record.resumed)
    if gathered is None:
        rows = tuple(record.row for _, record in records)
        return BatchSummary(rows, _counts(record for _, record in records), elapsed, measured)
    everything = sorted((pair for part in gathered for pair in part), key=lambda pair: pair[0])
    rows = tuple(record.row for _, record in everything)
    if out is not None:
        earlier = _earlier_rows(out, {item.case_id for item in inputs})
        write_atomic(out / SUMMARY_FILE, _summary_text([*earlier, *rows]))
    return BatchSummary(rows, _counts(record for _, record in everything), elapsed, measured)


def _counts(records: Iterable[CaseRecord]) -> dict[str, int]:
    counts = dict.fromkeys((*STATUSES, "resumed"), 0)
    for record in records:
        counts[record.status] += 1
        counts["resumed"] += record.resumed
    return counts


def _run_shard(mine: list[tuple[int, InputFile]], models: ModelSet, out: Path | None, options: BatchOptions,
               shard: Shard, on_case: Callable[[CaseRecord], None] | None) -> list[tuple[int, CaseRecord]]:
    """Measure this rank's inputs; returns (input position, record) pairs of light records (no measurement)."""
    from tqdm import tqdm

    records: list[tuple[int, CaseRecord]] = []
    progress = tqdm(total=len(mine), unit="image", disable=not options.progress or not shard.is_main,
                    file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                    desc=f"measuring ({shard.world} processes)" if shard.distributed else "measuring")
    tally = Counter()

    def finish(position: int, record: CaseRecord) -> None:
        if on_case is not None:
            on_case(record)
        records.append((position, dataclasses.replace(record, measurement=None)))
        if len(records) % _COLLECT_EVERY == 0:
            gc.collect()
        tally[record.status] += 1
        progress.set_postfix({status: tally[status] for status in STATUSES if tally[status]}, refresh=False)
        progress.update()

    todo: list[tuple[int, InputFile, dict | None]] = []
    for position, item in mine:
        name = item.path.name if options.keep_names else None
        if item.skip_reason is not None:
            finish(position, CaseRecord(item.case_id, name, "skipped", item.skip_reason,
                                        _row(item.case_id, name, "skipped", item.skip_reason)))
            continue
        fingerprint = _fingerprint(item, models, options) if out is not None else None
        done = _resumed(item, out, fingerprint) if options.resume else None
        if done is not None:
            finish(position, done)
        else:
            todo.append((position, item, fingerprint))

    # A worker reads (and measures) whole batches: with one batch to do, workers only add their start-up time.
    reading = options if len(todo) > options.batch_size else dataclasses.replace(options, workers=0)
    loader = _reader([item for _, item, _ in todo], reading, models)

    def write(jobs: list[tuple[int, InputFile, _Read, Measurement | str | None, dict | None]]):
        # In order; an interruption stops here, before the batch's later cases are written.
        return [(position, _finish_case(item, read, outcome, out, options, fingerprint))
                for position, item, read, outcome, fingerprint in jobs]

    # One writer thread draws and writes a batch's outputs while the networks run on the next batch
    # (torch, zlib and PIL release the GIL); cases still finish in input order.
    # (With a single batch there is nothing to overlap: it is written here.)
    written: Future | None = None
    threaded = len(todo) > options.batch_size
    try:
        with (ThreadPoolExecutor(max_workers=1, thread_name_prefix="kneealign-writer") if threaded
              else nullcontext()) as writer:
            for batch, results in loader:
                if results is None:  # read, not measured, by the workers
                    results = _measure([read for read in batch if read.radiograph is not None], models, options)
                for position, record in written.result() if written is not None else ():
                    finish(position, record)
                jobs = [(todo[read.index][0], todo[read.index][1], read, results.get(read.index, read.error),
                         todo[read.index][2]) for read in batch]
                if writer is not None:
                    written = writer.submit(write, jobs)
                else:
                    written = Future()
                    written.set_result(write(jobs))
            for position, record in written.result() if written is not None else ():
                finish(position, record)
    finally:
        progress.close()
    return records


def _measure(reads: list[_Read], models: ModelSet, options: BatchOptions) -> dict[int, Measurement | str]:
    """Results by input index: the batch at once, or image by image when the batch fails."""
    if not reads:
        return {}
    images = [read.radiograph for read in reads]
    try:
        results = measure_batch(images, models, kind=options.kind, side=options.side, batch_size=options.batch_size)
        return {read.index: result for read, result in zip(reads, results)}
    except Exception:  # noqa: BLE001 - find the image that broke the batch; the others still count
        pass
    outcomes: dict[int, Measurement | str] = {}
    for read, image in zip(reads, images):
        try:
            outcomes[read.index] = measure_batch([image], models, kind=options.kind, side=options.side,
                                                 batch_size=1)[0]
        except KneeAlignmentError as exc:
            outcomes[read.index] = f"cannot be measured: {exc}"
        except Exception as exc:  # noqa: BLE001 - one image must not stop the batch
            outcomes[read.index] = f"unexpected {type(exc).__name__} while measuring (please report)"
    return outcomes


def _finish_case(item: InputFile, read: _Read, outcome: Measurement | str | None, out: Path | None,
                 options: BatchOptions, fingerprint: dict | None) -> CaseRecord:
    name = item.path.name if options.keep_names else None
    if not isinstance(outcome, Measurement):
        reason = outcome or "the image could not be read"
        if out is not None:
            _forget(item.case_id, out)
        return CaseRecord(item.case_id, name, "error", reason, _row(item.case_id, name, "error", reason))
    result = dataclasses.replace(outcome, case_id=item.case_id, input_name=name)
    if out is not None:
        _forget(item.case_id, out)
        try:
            _write_case(item, read.radiograph, result, out, options, fingerprint)
        except Exception as exc:  # noqa: BLE001 - a full disk or an odd source header fails this case only
            reason = _write_error(exc)
            return CaseRecord(item.case_id, name, "error", reason, _row(item.case_id, name, "error", reason))
    row = tuple(result.to_csv_row())
    return CaseRecord(item.case_id, name, row[_STATUS_COLUMN], result.reason, row, result)
