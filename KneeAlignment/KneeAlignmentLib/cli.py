"""The `kneealign` command line.

Each subcommand is a thin shell over the library: parse arguments, call one library
function, print a table for people or JSON for programs. Errors of the documented
kind (KneeAlignmentError) end the program with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import DISCLAIMER, __version__
from .errors import KneeAlignmentError

EXAMPLES = Path(__file__).resolve().parent / "data" / "examples"  # annotated examples (schema template)
EXAMPLE_RADIOGRAPHS = Path(__file__).resolve().parent.parent / "Resources" / "Examples"  # phantom DICOMs


def _add_models_dir(p, *aliases: str) -> None:
    p.add_argument("--models-dir", *aliases, dest="models_dir", type=Path, metavar="DIR",
                   help="models folder with global/, local_preop/, local_postop/ bundles, used whole "
                        "(default: $KNEEALIGN_MODELS; if unset, each role from the user's models folder "
                        "($KNEEALIGN_USER_MODELS, else ~/.kneealignment/models) where it has one, else the shipped "
                        "Resources/Models)")


def _spacing_mm(text: str) -> float:
    """argparse type of one --spacing value: a positive finite number of millimetres."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"a pixel spacing must be a positive number of mm, got {text!r}")
    return value


def _add_spacing(p, help_text: str) -> None:
    """The one definition of --spacing ROW_MM COL_MM (angles, measure)."""
    p.add_argument("--spacing", nargs=2, type=_spacing_mm, metavar=("ROW_MM", "COL_MM"), help=help_text)


def _add_side(p, detection: str) -> None:
    """The one definition of --side (angles, measure), with the side rule."""
    from .measurement import SIDE_RULE

    p.add_argument("--side", choices=["L", "R"], help=f"knee side: {SIDE_RULE} ({detection})")


def _add_device(p, note: str = "") -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help=f"where the networks run (default: CUDA when available{note})")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


# --- angles -------------------------------------------------------------------------

def _add_angles(sub):
    p = sub.add_parser(
        "angles", help="angles from a landmark file (.mrk.json)",
        description="Compute aTFA (FTS and FNTS) and the other alignment angles from annotated "
                    "landmarks in a Slicer markups file.")
    p.add_argument("landmarks", type=Path, help="landmarks as a Slicer markups file (.mrk.json)")
    p.add_argument("--schema", choices=["auto", "preop", "postop"], default="auto",
                   help="landmark schema (default: from the number of points)")
    _add_side(p, "detected from the landmarks: the fibula is lateral")
    _add_spacing(p, "pixel spacing, when the points were placed on an image without spacing "
                    "(coordinates in pixels)")
    p.add_argument("--image", type=Path, help="the radiograph the landmarks were placed on (for --overlay)")
    p.add_argument("--overlay", type=Path, metavar="PNG",
                   help="draw landmarks, axes and angles over --image into this PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_angles)


def _cmd_angles(args) -> int:
    from . import markups
    from .case_view import format_alignment
    from .measurement import measure_points
    from .schema import kind_for_labels, load_schema

    if (args.image is None) != (args.overlay is None):
        raise KneeAlignmentError("--image and --overlay go together")
    spacing, plane, radiograph = tuple(args.spacing or (1.0, 1.0)), markups.ImagePlane.identity(), None
    if args.image is not None:
        from .imageio import read_radiograph

        radiograph = read_radiograph(args.image)
        if args.spacing is None and radiograph.spacing_mm is not None:
            # the points are millimetres on this image: map them onto its pixels
            spacing, plane = radiograph.spacing_mm, markups.ImagePlane.identity(radiograph.spacing_mm)
    kind = args.schema
    if kind == "auto":
        kind = kind_for_labels([label for n in markups.read_markups(args.landmarks) if n.type == "Fiducial"
                                for label in n.labels])
    schema = load_schema(kind)
    points_px = markups.read_landmarks(args.landmarks, schema.names, plane)
    measured = measure_points(points_px, schema, side=args.side, radiograph=radiograph, spacing_mm=spacing)
    alignment, side_source, flags = measured.alignment, measured.side.source, measured.side.flags
    if args.overlay is not None:
        from .overlay import draw_result

        notes = [f"{'left' if alignment.side == 'L' else 'right'} knee (side from {side_source})",
                 *(f"{flag.code}: {flag.message}" for flag in flags),
                 f"{schema.kind} landmarks from {args.landmarks.name}"]
        draw_result(radiograph.pixels, (schema.kind, points_px, None), alignment, notes,
                    "annotated landmarks (no model)", args.overlay)
    if args.json:
        # qc_flags only when raised: the output of an unflagged case is unchanged
        _print_json({"file": args.landmarks.name, "schema": schema.kind, "schema_version": schema.version,
                     "side_source": side_source, "software": f"kneealignment {__version__}",
                     "intended_use": DISCLAIMER, **alignment.to_dict(),
                     **({"qc_flags": [dataclasses.asdict(f) for f in flags]} if flags else {})})
    else:
        print(f"{args.landmarks.name}  ({schema.kind} schema, side from {side_source})")
        print(format_alignment(alignment))
        for flag in flags:
            print(f"  flagged {flag.code}: {flag.message}")
        print(DISCLAIMER)
    return 0


# --- info ---------------------------------------------------------------------------

def _add_info(sub):
    p = sub.add_parser(
        "info", help="what is read from images (size, spacing, side, ...)",
        description="Print what the reader takes from each image: size, bit depth, photometric "
                    "interpretation, pixel spacing and side with their sources. Never prints "
                    "patient identifiers.")
    p.add_argument("images", nargs="+", type=Path, help="DICOM, PNG, JPEG, TIFF, NRRD or NIfTI files")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    from .imageio import read_radiograph

    results, failed = [], 0
    for path in args.images:
        try:
            results.append({"file": path.name, **read_radiograph(path).info()})
        except KneeAlignmentError as exc:
            failed += 1
            results.append({"file": path.name, "error": str(exc)})
    if args.json:
        _print_json(results)
    else:
        for r in results:
            print(r["file"])
            for key, value in r.items():
                if key != "file":
                    print(f"  {key:<22} {value}")
    return 1 if failed else 0


# --- schema -------------------------------------------------------------------------

def _add_schema(sub):
    p = sub.add_parser("schema", help="list a landmark schema or draw it",
                       description="List the landmarks of a schema (name, group, mirror partner, "
                                   "description) or draw its diagram as a PNG.")
    p.add_argument("kind", choices=["preop", "postop"])
    p.add_argument("--figure", type=Path, metavar="PNG", help="write the labelled diagram here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_schema)


def _cmd_schema(args) -> int:
    from .schema import load_schema

    schema = load_schema(args.kind)
    if args.figure:
        from .overlay import draw_schema

        print(f"wrote {draw_schema(args.kind, args.figure)}")
    elif args.json:
        _print_json([lm.__dict__ for lm in schema.landmarks])
    else:
        print(f"{args.kind} schema v{schema.version}: {len(schema)} landmarks")
        for lm in schema.landmarks:
            print(f"{lm.index:4d}  {lm.name:<6} {lm.group:<24} {lm.mirror or '-':<6} {lm.description}")
    return 0


# --- synth --------------------------------------------------------------------------

def _add_synth(sub):
    p = sub.add_parser(
        "synth", help="make synthetic knee radiographs with exact ground truth",
        description="Render phantom AP knee radiographs: per case a DICOM DX file, a 16-bit PNG and the "
                    "true landmarks (.mrk.json), plus manifest.csv with the true angles and the generator "
                    "parameters. The same seed gives identical files.")
    p.add_argument("--kind", choices=["preop", "postop"], required=True)
    p.add_argument("--n", type=int, required=True, help="number of cases")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(2000, 1600),
                   help="image size in pixels (default 2000 1600)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.add_argument("--contact-sheet", action="store_true",
                   help="also write contact_sheet.png and contact_sheet_landmarks.png of the first 16 cases")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args) -> int:
    from tqdm import tqdm

    from .phantom import generate_dataset, render_case

    with tqdm(total=args.n, unit="image", desc=f"synth {args.kind}") as bar:
        manifest = generate_dataset(args.kind, args.n, args.seed, args.out, size=tuple(args.size),
                                    workers=args.workers, progress=lambda done, total: bar.update(done - bar.n))
    print(f"wrote {args.n} cases and {manifest}")
    if args.contact_sheet:
        from .overlay import draw_contact_sheet

        cases = [render_case(args.kind, args.seed, i, tuple(args.size)) for i in range(min(16, args.n))]
        images = [c.image for c in cases]
        for name, points in (("contact_sheet.png", None), ("contact_sheet_landmarks.png", [c.landmarks_px for c in cases])):
            print(f"wrote {draw_contact_sheet(images, points, args.kind, args.out / name)}")
    return 0


# --- demo ---------------------------------------------------------------------------

def _add_demo(sub):
    p = sub.add_parser("demo", help="measure the bundled example radiographs with the bundled models",
                       description="Run the whole pipeline (global and local networks, geometry, quality control) "
                                   "on the bundled example radiographs, a pre-op and a post-op phantom DICOM with "
                                   "known true angles: print each result beside the truth and write the results "
                                   "and overlays (<case>.png) to --out.")
    p.add_argument("--out", type=Path, default=Path("kneealign-demo"),
                   help="output folder (default: ./kneealign-demo)")
    _add_models_dir(p)
    _add_device(p)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from .batch import BatchOptions, discover_inputs, run_batch
    from .bundle.modelset import ModelSet
    from .bundle.resolve import resolve_models
    from .datasets import find_cases
    from .measurement import format_measurement, measure_points

    cases = find_cases(EXAMPLE_RADIOGRAPHS)  # each DICOM with its true landmarks (.mrk.json)
    truth = {}
    for case in cases:
        item = case.load()  # its side decided there
        truth[case.image_path.name] = measure_points(item.points_px, item.schema, side=item.side,
                                                     spacing_mm=item.radiograph.spacing_mm).alignment
    models = ModelSet.load(resolve_models(args.models_dir), device=args.device)

    def report(record) -> None:
        print(f"== {record.input_name}")
        print(format_measurement(record.measurement) if record.measurement is not None
              else f"{record.status}: {record.reason}")
        true = truth[record.input_name]
        print(f"phantom truth: aTFA FTS {true.atfa_fts_deg:+.1f} deg, FNTS {true.atfa_fnts_deg:+.1f} deg "
              f"(valgus positive), {true.side} knee\n")

    options = BatchOptions(keep_names=True, workers=0, progress=False)  # phantoms: no patient names
    summary = run_batch(discover_inputs([c.image_path for c in cases]), models, args.out, options, on_case=report)
    print(f"results and overlays (<case>.png): {args.out}/ (summary.csv lists the cases)")
    print(DISCLAIMER)
    return 1 if summary.failed else 0


# --- measure ------------------------------------------------------------------------

def _add_measure(sub):
    p = sub.add_parser(
        "measure", help="measure aTFA on radiographs (files, folders, whole cohorts) with the trained models",
        description="Find the landmarks on AP knee radiographs with the two-stage hourglass models and measure "
                    "aTFA (FTS and FNTS). Inputs are files and folders (searched recursively; non-image files "
                    "are skipped with a reason). Each input gets a case id (case-<12 hex digits> from its "
                    "relative path); input file names, which often name patients, are recorded only with "
                    "--keep-names. With --out, each case's results go to files and a summary.csv gets one row "
                    "per input; without, results are printed. Under torchrun the inputs are shared among the "
                    "processes and rank 0 writes the merged summary. Exit status 1 when any input failed.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="DICOM, PNG, JPEG, TIFF, NRRD or NIfTI files, or folders of them")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write <case>.json, <case>.mrk.json (Slicer markups), <case>.png (overlay) per input "
                        "and summary.csv here, each file atomically")
    p.add_argument("--resume", action="store_true",
                   help="skip inputs whose results in --out are complete and current")
    p.add_argument("--dicom-sr", action="store_true",
                   help="for DICOM inputs also write <case>.sr.dcm (DICOM SR measurement report: aTFA and "
                        "landmarks) and <case>.sc.dcm (the overlay as Secondary Capture) into the source's study; "
                        "the only outputs carrying the source's patient identifiers")
    p.add_argument("--model", choices=["auto", "preop", "postop"], default="auto",
                   help="pre-op or post-op (implants) model (default: auto, decided per image)")
    _add_models_dir(p)
    _add_side(p, "detected from the image")
    _add_spacing(p, "pixel spacing (row, column) in mm for images whose file carries none (PNG/JPEG exports); "
                    "recorded as given. An input whose own spacing differs is refused with a message")
    _add_device(p, "; cuda:LOCAL_RANK under torchrun")
    p.add_argument("--batch-size", type=int, default=2, metavar="N",
                   help="images per network batch (default: 2; on a GPU more, e.g. 32)")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="processes reading images and, on the CPU, measuring them, a batch each at a time, "
                        "while this one writes the results (default: 2; 0: none, all in this process)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads per network call in this process (default: 1; workers use one each; more "
                        "pays off for the paper models on several free cores)")
    p.add_argument("--keep-names", action="store_true",
                   help="record each input's file name in its results (off: names often identify patients)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: the results (without --out) or the run's counts (with --out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_measure)


def _cmd_measure(args) -> int:
    import torch

    from .batch import SUMMARY_FILE, BatchOptions, discover_inputs, run_batch
    from .bundle.modelset import ModelSet
    from .bundle.resolve import resolve_models
    from .measurement import format_measurement
    from .sharding import Shard

    shard = Shard.from_env()
    if args.out is None:
        for flag, given in (("--resume", args.resume), ("--dicom-sr", args.dicom_sr), ("torchrun", shard.distributed)):
            if given:
                print(f"kneealign measure: error: {flag} needs --out", file=sys.stderr)
                return 2
    try:
        options = BatchOptions(kind=args.model, side=args.side, spacing_mm=args.spacing and tuple(args.spacing),
                               batch_size=args.batch_size, workers=args.workers,
                               keep_names=args.keep_names, dicom_results=args.dicom_sr, resume=args.resume,
                               progress=not args.quiet and args.out is not None)
        inputs = discover_inputs(args.inputs, exclude=[args.out] if args.out else [])
    except ValueError as exc:
        print(f"kneealign measure: error: {exc}", file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"kneealign measure: error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    paths = resolve_models(args.models_dir)
    models = ModelSet.load(paths, device=shard.device(args.device))
    threads = torch.get_num_threads()  # restored after the run: callers in-process keep theirs
    if models.device.type == "cpu":
        # One thread by default: with idle threads asleep (OMP_WAIT_POLICY below) a second one costs a lite
        # network call more in wake-ups than it gains (35 vs 57 ms per local pass on 2 cores).
        torch.set_num_threads(args.threads)
    if not args.quiet and shard.is_main:  # which bundles: the user's models folder may replace shipped ones
        infos = {role: (models.global_model if role == "global" else models.local(role)).info for role in paths}
        print("models: " + "; ".join(f"{info.model_id} ({info.provenance}) from {paths[role]}"
                                     for role, info in infos.items()), file=sys.stderr)
    printed = []

    def report(record) -> None:
        if args.out is not None:
            return
        if args.json:
            printed.append(record.measurement.to_dict() if record.measurement is not None else
                           {"case_id": record.case_id, "input_name": record.input_name, "status": record.status,
                            "reason": record.reason})
        elif record.measurement is not None:
            print(format_measurement(record.measurement))
        else:
            print(f"{record.case_id}: {record.status}: {record.reason}")

    try:
        summary = run_batch(inputs, models, args.out, options, shard=shard, on_case=report)
    except OSError as exc:  # the output folder or the summary cannot be written (cases report their own)
        print(f"kneealign measure: error: cannot write to the output folder ({exc.strerror or exc})", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    if not shard.is_main:
        return 0  # rank 0's summary and exit status speak for the whole batch
    counts = summary.counts
    if args.out is None:
        if args.json:
            _print_json(printed)
        else:
            print(DISCLAIMER)
    elif args.json:
        _print_json({"inputs": len(inputs), "counts": counts, "summary": str(args.out / SUMMARY_FILE),
                     "images_per_s": round(summary.images_per_s, 3), "processes": shard.world})
    else:
        rate = f"; {summary.images_per_s:.2f} images/s" + (" on rank 0" if shard.distributed else "")
        print(f"{len(inputs)} inputs: {counts['ok']} ok, {counts['flagged']} flagged, {counts['error']} errors, "
              f"{counts['skipped']} skipped ({counts['resumed']} done before){rate if summary.measured else ''}")
        print(f"summary: {args.out / SUMMARY_FILE}")
        print(DISCLAIMER)
    return 1 if summary.failed else 0


# --- evaluate -----------------------------------------------------------------------

def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate", help="evaluate the models on annotated radiographs",
        description="Measure every annotated radiograph of a dataset folder (images with <name>.mrk.json, "
                    "or a phantom folder with manifest.csv) and compare with the annotation: landmark errors "
                    "(px and mm; overall, per group, per landmark), aTFA agreement (mean absolute difference, "
                    "Bland-Altman bias and limits, ICC(A,1) and ICC(C,1), failure rate), plots and a "
                    "Markdown summary in REPORT_DIR.")
    _add_models_dir(p, "--models")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="annotated dataset folder")
    p.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR", help="where the report goes")
    p.add_argument("--split", type=Path, metavar="SPLIT_JSON",
                   help="a training run's split.json: evaluate only its --subset (default test)")
    p.add_argument("--subset", choices=["train", "val", "test"], default="test",
                   help="subset of --split to evaluate (default: test)")
    p.add_argument("--model", choices=["annotation", "auto"], default="annotation",
                   help="pre-op or post-op model: the annotation's (default), or auto, decided per image as "
                        "measure does (the report then says how often the decision was right)")
    p.add_argument("--failure-deg", type=float, default=3.0,
                   help="an aTFA error above this counts as a failure (default: 3)")
    _add_device(p)
    p.add_argument("--batch-size", type=int, default=4, help="images per network batch (default: 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    import json as json_mod

    from . import evaluation
    from .bundle.modelset import ModelSet
    from .bundle.resolve import resolve_models
    from .datasets import DatasetError, find_cases

    cases = find_cases(args.data)
    notes = [f"data: {args.data.name}"]
    if args.split:
        try:
            wanted = set(json_mod.loads(args.split.read_text(encoding="utf-8"))[args.subset])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"cannot read the {args.subset} list of {args.split} ({exc})") from exc
        cases = [c for c in cases if c.case_id in wanted]
        if len(cases) != len(wanted):
            raise DatasetError(f"{args.split}: {len(wanted) - len(cases)} {args.subset} cases are not "
                               f"in {args.data}")
        notes.append(f"{args.subset} subset of {args.split.name}")
    models = ModelSet.load(resolve_models(args.models_dir), device=args.device)
    notes.append("models: " + ", ".join(f"{m.info.role} {m.info.model_id}"
                                        for m in (models.global_model, *models.local_models.values())))
    notes.append(f"pre-op/post-op model: {'decided per image' if args.model == 'auto' else 'the annotation’s'}")
    from tqdm.auto import tqdm

    results = evaluation.evaluate((c.load() for c in cases), models, kind=args.model, batch_size=args.batch_size,
                                  progress=lambda it: tqdm(it, total=len(cases), desc="evaluate", unit="image",
                                                           disable=args.quiet))
    summary = evaluation.write_report(results, args.out, failure_deg=args.failure_deg, notes=notes)
    for method, a in summary["angles"].items():
        mad = a.get("mean_abs_diff", float("nan"))
        icc = a.get("icc_a1", float("nan"))
        print(f"aTFA {method.upper():<4}: MAD {mad:.2f} deg, ICC(A,1) {icc:.3f}, "
              f"failures {a['failures']}/{a['cases']}")
    if args.model == "auto":
        print(f"pre-op/post-op decided right: {100 * summary['kind_accuracy']:.1f}%")
    print(f"report: {args.out / 'report.md'}")
    print(DISCLAIMER)
    return 0


# --- models ---------------------------------------------------------------------------

def _add_models(sub):
    p = sub.add_parser(
        "models", help="list the model bundles in use and whether each is a known release",
        description="Load the bundle of each role that measure would use (see --models-dir) with all checks "
                    "(metadata, format, weights checksum) and compare its weights and metadata with the releases "
                    "pinned in this software. Anything else (imported, trained in-house, changed) is "
                    "user-supplied, and every result it produces says so. Exit status 1 when a bundle is not a "
                    "known release or does not load.")
    p.add_argument("action", choices=["verify"], help="verify: list and check the bundles")
    _add_models_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args) -> int:
    from .bundle.known import verify_models
    from .bundle.resolve import resolve_models

    statuses = verify_models(resolve_models(args.models_dir, complete=False))
    if args.json:
        _print_json({"bundles": [s.to_dict() for s in statuses]})
    else:
        for s in statuses:
            digest = f" sha256 {s.weights_sha256[:12]}" if s.weights_sha256 else ""
            where = f" in {s.path}" if s.path else ""
            print(f"  {s.role:<13} {s.status:<13} {s.model_id or '-'}{digest}{where}: {s.detail}")
    present = [s for s in statuses if s.status != "missing"]
    return 0 if present and all(s.status == "release" for s in present) else 1


# --- main ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kneealign",
        description="Knee alignment on AP knee radiographs: anatomical tibiofemoral angle (aTFA) "
                    "by the FTS and FNTS methods from femur, tibia and fibula landmarks. " + DISCLAIMER)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in (_add_demo, _add_angles, _add_info, _add_schema, _add_synth, _add_measure, _add_evaluate,
                _add_models):
        add(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv, interrupted: str = "interrupted") -> int:
    """Parse and run a subcommand; documented errors end in one line and status 2."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KneeAlignmentError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: {interrupted}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


# Idle OpenMP threads of torch sleep instead of spinning (unless the user says otherwise): `measure`
# decodes images in worker processes beside the networks, and spinning threads starve them (on 2
# cores, 2 threads took 0.4-1.6 s per lite local network call instead of 0.09 s). Read when torch
# loads, so set before any command imports it; it changes no result (the threads split work alike).
OMP_WAIT_POLICY = "PASSIVE"


def main(argv=None) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
