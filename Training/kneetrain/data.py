"""Training data: annotated folders and on-the-fly phantoms, validated, with a leak-free split.

Data specifications (the CLI's ``--data``, repeatable):

- ``DIR``: a folder of radiographs with one Slicer ``<stem>.mrk.json`` per image, or a
  phantom output folder with its ``manifest.csv`` (``KneeAlignmentLib.datasets.find_cases``).
  Every case is read and checked once when the run starts (missing points, wrong point
  count, points outside the image, unreadable images): all problems are reported
  together, each naming its file.
- ``phantom:preop`` / ``phantom:postop``: synthetic radiographs rendered on the fly
  (``KneeAlignmentLib.phantom.render_case``), seeded; training sees new cases every
  epoch, validation a fixed set, from separate random streams, so training never runs
  out of data and never sees a validation case.

Split (folders): deterministic by case, from a hash of (seed, split key), so a case
keeps its subset when cases are added; the split key is the case id's first path
component, so images in a per-patient subfolder stay together. The split is stored as
``split.json`` in the run folder and checked for overlap (leakage) whenever read.

Sources are indexable: ``len(source)`` and ``source.load(index, epoch) -> AnnotatedImage``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from KneeAlignmentLib.errors import KneeAlignmentError
from KneeAlignmentLib.datasets import AnnotatedCase, AnnotatedImage, DatasetError
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.schema import KINDS, load_schema

from .augment import sample_seed
from .config import PhantomConfig

__all__ = [
    "PHANTOM_PREFIX",
    "SPLITS",
    "FolderSource",
    "PhantomSource",
    "ConcatSource",
    "parse_data_spec",
    "validate_cases",
    "make_split",
    "read_split",
    "write_split",
    "split_cases",
]

PHANTOM_PREFIX = "phantom:"
SPLITS = ("train", "val", "test")
SPLIT_FORMAT = "kneetrain-split"
_PHANTOM_STREAM_KEY = 7919  # keeps the phantom streams apart from small user seeds


def parse_data_spec(spec: str) -> tuple[str, str | Path]:
    """``"phantom:<kind>"`` -> ("phantom", kind); anything else -> ("folder", Path)."""
    if spec.startswith(PHANTOM_PREFIX):
        kind = spec[len(PHANTOM_PREFIX):]
        if kind not in KINDS:
            raise DatasetError(f"--data {spec}: the phantom kind must be one of {', '.join(KINDS)}")
        return "phantom", kind
    return "folder", Path(spec)


class FolderSource:
    """Annotated cases read from disk on every access (images are too large to cache).

    Args:
        cases: the cases of one subset.
        kind: the schema every annotation must follow, or None (global stage: either).
    """

    def __init__(self, cases: Sequence[AnnotatedCase], kind: str | None) -> None:
        self.cases, self.kind = list(cases), kind

    def __len__(self) -> int:
        return len(self.cases)

    def load(self, index: int, epoch: int) -> AnnotatedImage:
        return self.cases[index].load(self.kind)


class PhantomSource:
    """Phantom radiographs rendered on demand.

    Args:
        kind: "preop" or "postop".
        run_seed: the run's seed; with ``stream`` it selects an independent case stream.
        stream: 0 train, 1 validation, 2 test.
        cfg: case counts and image size.
        fresh_each_epoch: epoch e shows cases e * len .. (e + 1) * len - 1 of the stream
            (training); otherwise always the first len cases (validation).
    """

    def __init__(self, kind: str, run_seed: int, stream: int, cfg: PhantomConfig, *, fresh_each_epoch: bool) -> None:
        self.kind, self.stream, self.size = kind, stream, tuple(cfg.size)
        self.seed = sample_seed(run_seed, _PHANTOM_STREAM_KEY, stream)
        self.count = cfg.train_cases if fresh_each_epoch else cfg.val_cases
        self.fresh = fresh_each_epoch
        self.schema = load_schema(kind)

    def __len__(self) -> int:
        return self.count

    def load(self, index: int, epoch: int) -> AnnotatedImage:
        from KneeAlignmentLib.phantom import render_case  # heavy; only for phantom runs

        case_index = epoch * self.count + index if self.fresh else index
        case = render_case(self.kind, self.seed, case_index, self.size)
        radiograph = radiograph_from_array(case.image, spacing_mm=case.spacing_mm, side=case.side,
                                           value_range=(0.0, 1.0))
        return AnnotatedImage(f"phantom-{self.kind}-{self.stream}-{case_index}", radiograph,
                              case.landmarks_px, self.schema, case.side, "phantom")


class ConcatSource:
    """Several sources one after another."""

    def __init__(self, sources: Sequence) -> None:
        self.sources = [s for s in sources if len(s)]
        self.offsets = [0]
        for source in self.sources:
            self.offsets.append(self.offsets[-1] + len(source))

    def __len__(self) -> int:
        return self.offsets[-1]

    def load(self, index: int, epoch: int) -> AnnotatedImage:
        if not 0 <= index < len(self):
            raise IndexError(index)
        i = next(j for j in range(len(self.sources)) if index < self.offsets[j + 1])
        return self.sources[i].load(index - self.offsets[i], epoch)


def validate_cases(cases: Sequence[AnnotatedCase], kind: str | None, progress=None) -> None:
    """Read and check every case once; raise one DatasetError listing every problem.

    ``progress`` optionally wraps the iteration (e.g. tqdm).
    """
    problems = []
    for case in progress(cases) if progress is not None else cases:
        try:
            case.load(kind)
        except KneeAlignmentError as exc:
            problems.append(f"{case.case_id}: {exc}")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise DatasetError(f"{len(problems)} of {len(cases)} cases cannot be used:\n  {shown}")


# --- split ----------------------------------------------------------------------------------


def _split_key(case_id: str) -> str:
    return case_id.split("/", 1)[0]


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def make_split(case_ids: Sequence[str], val: float, test: float, seed: int) -> dict[str, list[str]]:
    """Deterministic train/val/test split by split key (see the module docstring).

    A key goes to test when its hash u in [0, 1) is below ``test``, to val when below
    ``test + val``, else to train. If a requested subset would be empty while train has
    at least two keys, the train key with the smallest u moves there.
    """
    keys = sorted({_split_key(c) for c in case_ids})
    u = {k: _unit_hash(seed, k) for k in keys}
    subset = {k: "test" if u[k] < test else "val" if u[k] < test + val else "train" for k in keys}
    for name, fraction in (("test", test), ("val", val)):
        train_keys = sorted((k for k in keys if subset[k] == "train"), key=u.get)
        if fraction > 0 and name not in subset.values() and len(train_keys) >= 2:
            subset[train_keys[0]] = name
    return {name: sorted(c for c in case_ids if subset[_split_key(c)] == name) for name in SPLITS}


def _check_split(split: dict, where: str) -> dict[str, list[str]]:
    if not isinstance(split, dict) or not all(isinstance(split.get(s), list) for s in SPLITS):
        raise DatasetError(f"{where}: needs lists {', '.join(SPLITS)}")
    if not all(isinstance(c, str) for s in SPLITS for c in split[s]):
        raise DatasetError(f"{where}: case ids must be strings")
    keys = {s: {_split_key(c) for c in split[s]} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = sorted(keys[a] & keys[b])
            if shared:
                raise DatasetError(f"{where}: {a} and {b} share cases (leakage): {', '.join(shared[:5])}")
    return {s: list(split[s]) for s in SPLITS}


def write_split(path: Path, split: dict[str, list[str]], *, seed: int, val: float, test: float) -> Path:
    """Store a split as JSON (after checking it)."""
    split = _check_split(split, str(path))
    doc = {"format": SPLIT_FORMAT, "format_version": 1, "seed": seed, "fractions": {"val": val, "test": test},
           "key": "first path component of the case id", **split}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def read_split(path: Path) -> dict[str, list[str]]:
    """Read a split written by :func:`write_split`; raises DatasetError if malformed or leaky."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read split file {path} ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != SPLIT_FORMAT:
        raise DatasetError(f"{path}: not a {SPLIT_FORMAT} file")
    return _check_split(doc, str(path))


def split_cases(cases: Sequence[AnnotatedCase], split: dict[str, list[str]]) -> dict[str, list[AnnotatedCase]]:
    """Cases per subset; every case of the dataset must be in the split, and vice versa."""
    by_id = {c.case_id: c for c in cases}
    listed = {c for s in SPLITS for c in split[s]}
    new, gone = sorted(set(by_id) - listed), sorted(listed - set(by_id))
    if new or gone:
        detail = "; ".join(f"{what}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
                           for what, ids in (("cases not in the split", new), ("split cases not in the data", gone))
                           if ids)
        raise DatasetError(f"the split does not match the data ({detail}); use the split made for this data "
                           f"or start a new run")
    return {s: [by_id[c] for c in split[s]] for s in SPLITS}
