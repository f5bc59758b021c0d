"""The `kneealign` command line.

Each subcommand is a thin shell over the library: parse arguments, call one library
function, print a table for people or JSON for programs. Errors of the documented
kind (KneeAlignmentError) end the program with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import KneeAlignmentError

NOT_CLINICAL = "Research software: not for clinical use."
EXAMPLES = Path(__file__).resolve().parent / "data" / "examples"


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
    p.add_argument("--side", choices=["L", "R"],
                   help="knee side (default: from the anatomy; the fibula is lateral)")
    p.add_argument("--spacing", nargs=2, type=float, metavar=("ROW_MM", "COL_MM"),
                   help="pixel spacing, when the points were placed on an image without spacing "
                        "(coordinates in pixels)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_angles)


def measure_landmark_file(path: Path, schema_kind="auto", side=None, spacing_mm=(1.0, 1.0)):
    """Alignment from a .mrk.json file; returns (alignment, schema, side_source).

    The file's coordinates are taken as they are (millimetres, or pixels of an image
    without spacing, for which ``spacing_mm`` gives the physical size).
    """
    from . import geometry, markups, schema as schema_mod

    if schema_kind == "auto":
        labels = [label for n in markups.read_markups(path) if n.type == "Fiducial" for label in n.labels]
        schema_kind = schema_mod.kind_for_labels(labels)
    schema = schema_mod.load_schema(schema_kind)
    points_px = markups.read_landmarks(path, schema.names)
    side_source = "given"
    if side is None:
        side, side_source = geometry.infer_side(points_px, schema), "anatomy (fibula is lateral)"
    return geometry.compute_alignment(points_px, schema, side, spacing_mm), schema, side_source


def _cmd_angles(args) -> int:
    from . import geometry

    spacing = tuple(args.spacing) if args.spacing else (1.0, 1.0)
    alignment, schema, side_source = measure_landmark_file(args.landmarks, args.schema, args.side, spacing)
    if args.json:
        _print_json({"file": args.landmarks.name, "schema": schema.kind, "schema_version": schema.version,
                     "side_source": side_source, "software": f"kneealignment {__version__}",
                     "intended_use": NOT_CLINICAL, **alignment.to_dict()})
    else:
        print(f"{args.landmarks.name}  ({schema.kind} schema, side from {side_source})")
        print(geometry.format_alignment(alignment))
        print(NOT_CLINICAL)
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


# --- demo ---------------------------------------------------------------------------

def _add_demo(sub):
    p = sub.add_parser("demo", help="run on the bundled examples",
                       description="Measure the bundled example annotations and print the angles.")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from . import geometry

    for path in sorted(EXAMPLES.glob("*.mrk.json")):
        alignment, schema, side_source = measure_landmark_file(path)
        print(f"== {path.name}  ({schema.kind} schema, side from {side_source})")
        print(geometry.format_alignment(alignment))
        print()
    print(NOT_CLINICAL)
    return 0


# --- measure ------------------------------------------------------------------------

def _add_measure(sub):
    p = sub.add_parser(
        "measure", help="measure aTFA on radiographs with the trained models",
        description="Find the landmarks on AP knee radiographs with the two-stage hourglass models and "
                    "measure aTFA (FTS and FNTS). Results are named image-0001, image-0002, ... in the order "
                    "of the IMAGE arguments; input file names (which often name patients) are recorded only "
                    "with --keep-names.")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                   help="DICOM, PNG, JPEG, TIFF, NRRD or NIfTI files")
    p.add_argument("--model", choices=["auto", "preop", "postop"], default="auto",
                   help="pre-op or post-op (implants) model (default: auto, decided per image)")
    p.add_argument("--models-dir", type=Path, metavar="DIR",
                   help="models folder with global/, local_preop/, local_postop/ bundles "
                        "(default: $KNEEALIGN_MODELS, else the bundled Resources/Models)")
    p.add_argument("--side", choices=["L", "R"],
                   help="knee side for images whose file does not state it (default: detected)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the networks run (default: CUDA when available)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write <case>.json, <case>.mrk.json (Slicer markups) and <case>.png "
                        "(overlay) per image here")
    p.add_argument("--keep-names", action="store_true",
                   help="record each input's file name in its results (off: names often identify patients)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_measure)


def _cmd_measure(args) -> int:
    import dataclasses

    from .atomicio import write_atomic
    from .imageio import read_radiograph
    from .measurement import format_measurement, write_markups
    from .overlay import draw_measurement
    from .pipeline import ModelSet, measure

    models = ModelSet.load(args.models_dir, device=args.device)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    reports, failed = [], 0
    for number, path in enumerate(args.images, start=1):
        case = f"image-{number:04d}"
        name = path.name if args.keep_names else None
        try:
            radiograph = read_radiograph(path)
            result = measure(radiograph, models, kind=args.model, side=args.side)
        except KneeAlignmentError as exc:
            failed += 1
            reports.append({"case_id": case, "input_name": name, "error": str(exc)})
            if not args.json:
                print(f"{case}: error: {exc}")
            continue
        result = dataclasses.replace(result, case_id=case, input_name=name)
        if args.out:
            write_atomic(args.out / f"{case}.json", result.to_json() + "\n")
            if result.landmarks is not None:
                write_markups(result, args.out, case)
            draw_measurement(radiograph.pixels, result, args.out / f"{case}.png")
        reports.append(result.to_dict())
        if not args.json:
            print(format_measurement(result))
    if args.json:
        _print_json(reports)
    else:
        print(NOT_CLINICAL)
    return 1 if failed else 0


# --- main ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kneealign",
        description="Knee alignment on AP knee radiographs: anatomical tibiofemoral angle (aTFA) "
                    "by the FTS and FNTS methods from femur, tibia and fibula landmarks. " + NOT_CLINICAL)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in (_add_demo, _add_angles, _add_info, _add_schema, _add_measure):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KneeAlignmentError as exc:
        print(f"kneealign: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kneealign: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
