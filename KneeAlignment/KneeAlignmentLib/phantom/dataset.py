"""Synthetic cases: one in memory (:func:`render_case`) or a whole dataset on disk.

Determinism. Case ``i`` of a dataset with seed ``s`` draws everything from
``numpy.random.SeedSequence(s, spawn_key=(i, kind))``: the anatomy and joint, the
acquisition, the textures and the detector noise each get their own child stream. The
same (kind, seed, index, size) therefore gives byte-identical pixels, points and files,
whatever the number of workers and whichever other cases are made.

On disk, per case (stem ``PHANTOM-000123``): ``.dcm`` (DICOM DX For Presentation),
``.png`` (the same image, 16-bit grey, bright = dense), ``.mrk.json`` (the true
landmarks as a Slicer point list in the pre- or post-op schema, LPS mm with the
image's PixelSpacing), and one row in ``manifest.csv``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..datasets import write_image16, write_manifest
from ..dicom_dx import full_range_window, write_dx
from ..geometry import compute_alignment
from ..markups import ImagePlane, write_landmarks
from ..schema import load_schema
from .imaging import sample_imaging
from .joint import build_knee
from .xray import effective_energy_kev, render

__all__ = ["Case", "render_case", "generate_dataset", "case_id", "MANIFEST_COLUMNS", "DEFAULT_SIZE"]

DEFAULT_SIZE = (2000, 1600)
MIN_SIZE = 96
_KIND_KEY = {"preop": 0, "postop": 1}

#: Columns of manifest.csv, in order.
MANIFEST_COLUMNS = (
    "id", "kind", "side", "seed", "case_index", "rows", "columns", "spacing_row_mm", "spacing_col_mm",
    "imager_spacing_mm", "magnification", "atfa_fts_deg", "atfa_fnts_deg", "alpha_deg", "beta_deg",
    "aldfa_deg", "mpta_deg", "jlca_deg", "jsw_lateral_mm", "jsw_medial_mm", "kl_grade", "osteophyte_mm",
    "scale", "rotation_deg", "flexion_deg", "leg_rotation_deg", "kvp", "dose_per_mm2", "scatter_fraction",
    "photometric", "bits_stored", "collimated", "marker", "calibration_ball", "burned_in_text",
    "patellar_button", "tibial_metal", "dicom", "png", "markups",
)


def case_id(index: int) -> str:
    """Synthetic identifier of case ``index``: PHANTOM-000123."""
    return f"PHANTOM-{index:06d}"


@dataclass(frozen=True, eq=False)
class Case:
    """One synthetic radiograph with its exact ground truth.

    ``image``: (H, W) float32 in [0, 1], bright = dense: what
    :func:`..imageio.read_radiograph` returns for the case's DICOM (bit for bit when it
    is MONOCHROME2, to float32 rounding when MONOCHROME1) and, to 16-bit precision, PNG.
    ``display``: (H, W) uint16, the same image as ``bits_stored``-bit display values.
    ``landmarks_px``: (K, 2) (x, y) in the kind's schema order.
    ``spacing_mm``: (row_mm, col_mm) at the knee's plane (PixelSpacing).
    ``side``: 'R' or 'L'. ``truth``: true angles in degrees (``atfa_fts_deg``,
    ``atfa_fnts_deg``, post-op ``alpha_deg`` and ``beta_deg``; construction values),
    plus aLDFA, MPTA, JLCA and joint-space widths measured on the true landmarks.
    ``params``: flat dict of every generator parameter (JSON-able scalars).
    """

    kind: str
    index: int
    seed: int
    image: np.ndarray
    display: np.ndarray
    bits_stored: int
    photometric: str
    landmarks_px: np.ndarray
    spacing_mm: tuple[float, float]
    side: str
    truth: dict
    params: dict

    @property
    def id(self) -> str:
        return case_id(self.index)


def _check(kind: str, seed: int, index: int, size) -> tuple[int, int]:
    load_schema(kind)  # SchemaError for an unknown kind
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"case index must be a non-negative integer, got {index!r}")
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (rows, columns), got {size!r}") from None
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} x {MIN_SIZE} pixels, got {h} x {w}")
    return h, w


def render_case(kind: str, seed: int, case_index: int, size=DEFAULT_SIZE) -> Case:
    """Render case ``case_index`` of the dataset (kind, seed) at ``size`` = (rows, columns).

    Raises:
        SchemaError: unknown kind.
        ValueError: negative seed or index, or a size below 96 x 96.
    """
    h, w = _check(kind, seed, case_index, size)
    sequence = np.random.SeedSequence(int(seed), spawn_key=(int(case_index), _KIND_KEY[kind]))
    knee_rng, imaging_rng, texture_rng, noise_rng = (np.random.default_rng(s) for s in sequence.spawn(4))
    knee = build_knee(kind, knee_rng)
    side = "R" if imaging_rng.random() < 0.5 else "L"
    tibial_axis = knee.poses["tibia"].rot @ np.array([0.0, 1.0])
    imaging = sample_imaging(imaging_rng, knee.landmarks_mm, tibial_axis, (h, w), side, case_id(case_index))
    rendered = render(knee, imaging, texture_rng, noise_rng)
    maxval = (1 << imaging.bits_stored) - 1
    image = rendered.display.astype(np.float32) / np.float32(maxval)
    spacing = (imaging.spacing_mm, imaging.spacing_mm)
    schema = load_schema(kind)
    measured = compute_alignment(rendered.landmarks_px, schema, side, spacing)
    truth = dict(knee.truth)
    for key in ("aldfa_deg", "mpta_deg", "jlca_deg", "jsw_lateral_mm", "jsw_medial_mm"):
        truth[key] = getattr(measured, key)
    params = _flat_params(knee, imaging)
    params["study_date"] = (date(2020, 1, 1) + timedelta(days=int(imaging_rng.integers(0, 1500)))).strftime("%Y%m%d")
    for array in (image, rendered.display):
        array.flags.writeable = False
    return Case(kind=kind, index=int(case_index), seed=int(seed), image=image, display=rendered.display,
                bits_stored=imaging.bits_stored, photometric=imaging.photometric,
                landmarks_px=rendered.landmarks_px, spacing_mm=spacing, side=side, truth=truth, params=params)


def _flat_params(knee, imaging) -> dict:
    out = {f"anatomy.{k}": v for k, v in asdict(knee.anatomy).items()}
    if knee.implant is not None:
        out.update({f"implant.{k}": v for k, v in asdict(knee.implant).items()})
    out.update({f"joint.{k}": v for k, v in knee.joint.items()})
    for k, v in asdict(imaging).items():
        if k in ("marker", "ball", "texts", "collimation", "ruler", "seam", "export"):
            out[f"imaging.{k}"] = v is not None and v != () and v != []
        else:
            out[f"imaging.{k}"] = v
    out["imaging.effective_energy_kev"] = effective_energy_kev(imaging.kvp)
    return {k: _plain(v) for k, v in out.items()}


def _plain(value):
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------ files


def write_case(case: Case, out_dir: Path) -> dict:
    """Write the DICOM, PNG and markups of ``case`` into ``out_dir``; return its manifest row."""
    stem = case.id
    maxval = (1 << case.bits_stored) - 1
    stored = case.display if case.photometric == "MONOCHROME2" else (maxval - case.display).astype(np.uint16)
    p = case.params
    dicom = write_dx(
        out_dir / f"{stem}.dcm", stored,
        imager_spacing_mm=(p["imaging.imager_spacing_mm"],) * 2, image_laterality=case.side,
        photometric=case.photometric, bits_stored=case.bits_stored,
        rescale=(1.0, 0.0), window=full_range_window(case.bits_stored),
        uid_entropy=["KneeAlignment phantom", case.kind, case.seed, case.index],
        patient_id=stem, patient_name=f"PHANTOM^{case.index:06d}", spacing_mm=case.spacing_mm,
        magnification=p["imaging.magnification"], burned_in_annotation=bool(p["imaging.texts"]),
        study_date=p["study_date"], study_time="120000", accession_number=f"SYN{case.index:06d}",
        study_id=str(case.index), kvp=p["imaging.kvp"], source_to_detector_mm=p["imaging.sid_mm"],
        source_to_patient_mm=p["imaging.sid_mm"] / p["imaging.magnification"],
        description=f"KNEE AP ({'post-op' if case.kind == 'postop' else 'pre-op'}, synthetic)",
        derivation="Synthetic radiograph rendered by the KneeAlignment phantom",
    )
    png = write_image16(out_dir / f"{stem}.png", case.image)
    schema = load_schema(case.kind)
    markups = write_landmarks(out_dir / f"{stem}.mrk.json", schema.names, case.landmarks_px,
                              ImagePlane.identity(case.spacing_mm),
                              descriptions=[lm.description for lm in schema.landmarks], node_name=f"{stem} landmarks")
    t = case.truth
    return {
        "id": stem, "kind": case.kind, "side": case.side, "seed": case.seed, "case_index": case.index,
        "rows": case.image.shape[0], "columns": case.image.shape[1],
        "spacing_row_mm": case.spacing_mm[0], "spacing_col_mm": case.spacing_mm[1],
        "imager_spacing_mm": p["imaging.imager_spacing_mm"], "magnification": p["imaging.magnification"],
        "atfa_fts_deg": t["atfa_fts_deg"], "atfa_fnts_deg": t["atfa_fnts_deg"],
        "alpha_deg": t.get("alpha_deg", ""), "beta_deg": t.get("beta_deg", ""),
        "aldfa_deg": _blank(t["aldfa_deg"]), "mpta_deg": _blank(t["mpta_deg"]), "jlca_deg": _blank(t["jlca_deg"]),
        "jsw_lateral_mm": _blank(t["jsw_lateral_mm"]), "jsw_medial_mm": _blank(t["jsw_medial_mm"]),
        "kl_grade": p["anatomy.kl_grade"], "osteophyte_mm": p["anatomy.osteophyte_mm"], "scale": p["anatomy.scale"],
        "rotation_deg": p["imaging.rotation_deg"], "flexion_deg": p["anatomy.flexion_deg"],
        "leg_rotation_deg": p["anatomy.leg_rotation_deg"], "kvp": p["imaging.kvp"],
        "dose_per_mm2": p["imaging.dose_per_mm2"], "scatter_fraction": p["imaging.scatter_fraction"],
        "photometric": case.photometric, "bits_stored": case.bits_stored,
        "collimated": p["imaging.collimation"], "marker": p["imaging.marker"],
        "calibration_ball": p["imaging.ball"], "burned_in_text": p["imaging.texts"],
        "patellar_button": p.get("implant.patellar_button", ""), "tibial_metal": p.get("implant.tibial_metal", ""),
        "dicom": dicom.name, "png": png.name, "markups": markups.name,
    }


def _blank(value):
    return "" if value is None else value


def _make(job) -> dict:
    kind, seed, index, size, out_dir = job
    return write_case(render_case(kind, seed, index, size), Path(out_dir))


def generate_dataset(kind: str, n: int, seed: int, out_dir, size=DEFAULT_SIZE, workers: int = 1,
                     progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``n`` cases (indices 0..n-1) of ``kind`` into ``out_dir``; return manifest.csv's path.

    ``workers`` > 1 renders in that many processes; the files are identical to a
    one-worker run. ``progress(done, total)`` is called in this process after each case.

    Raises:
        SchemaError: unknown kind.
        ValueError: n < 1, workers < 1, a negative seed or a size below 96 x 96.
        OSError: the folder cannot be created or written.
    """
    size = _check(kind, seed, 0, size)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(kind, int(seed), i, size, str(out)) for i in range(int(n))]
    rows: list[dict] = []
    if workers == 1:
        for k, job in enumerate(jobs):
            rows.append(_make(job))
            if progress is not None:
                progress(k + 1, len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=int(workers), mp_context=get_context("spawn")) as pool:
            for k, row in enumerate(pool.map(_make, jobs)):
                rows.append(row)
                if progress is not None:
                    progress(k + 1, len(jobs))
    return write_manifest(out, MANIFEST_COLUMNS, rows)

