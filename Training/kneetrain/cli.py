"""``kneealign-train``: train a stage, or export a run as a model bundle.

    kneealign-train global --config configs/global_lite.yaml --data phantom:preop --out runs/global
    kneealign-train local  --config configs/local_preop_lite.yaml --data DIR --out runs/local_preop [--resume]
    kneealign-train export runs/global --out models/global
    kneealign-train calibrate-qc --models-dir models --data runs/validation/preop --data runs/validation/postop --write

Multi-GPU: ``torchrun --nproc_per_node N -m kneetrain.cli global ...`` (same arguments).
Errors of the documented kind end the program with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from KneeAlignmentLib.cli import run

from .config import ConfigError, load_config


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.epochs=5), got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kneealign-train",
                                     description="Train KneeAlignment's landmark networks and export model bundles.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in ("global", "local"):
        p = sub.add_parser(stage, help=f"train the {stage} stage",
                           description=f"Train the {stage} stage. Checkpoints every epoch into OUT/checkpoints.")
        p.add_argument("--config", type=Path, required=True, help="YAML config (Training/configs/...)")
        p.add_argument("--data", action="append", required=True, metavar="DIR|phantom:KIND",
                       help="annotated folder (images + .mrk.json, or a phantom folder with manifest.csv), or "
                            "phantom:preop / phantom:postop for on-the-fly synthetic data; repeatable")
        p.add_argument("--out", type=Path, required=True, help="run folder")
        p.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
        p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
        p.add_argument("--split", type=Path, help="reuse this split.json (e.g. the global run's) for folder data")
        p.add_argument("--init", type=Path, metavar="BUNDLE",
                       help="start from this model bundle's weights (same stage, schema and architecture), "
                            "e.g. to fine-tune a shipped model on new data")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set optim.epochs=5; repeatable")
        p.add_argument("--epochs-now", type=int, metavar="N",
                       help="stop after epoch N of the schedule (resume later with --resume)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(func=_cmd_train, stage=stage)
    p = sub.add_parser("export", help="write a run's best (or a given) checkpoint as a model bundle")
    p.add_argument("checkpoint", type=Path, help="run folder (uses checkpoints/best.pt) or checkpoint file")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to create")
    p.add_argument("--name", help="bundle name (default from stage, schema and preset)")
    p.add_argument("--version", default="0.1.0", help="bundle version (default 0.1.0)")
    p.add_argument("--description", help="bundle description (default from the run)")
    p.add_argument("--half", action="store_true", help="store float16 weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("calibrate-qc", help="derive a models folder's QC thresholds from validation phantoms",
                       description="Measure validation cases (annotated folders, never the test set) and the "
                                   "wrong-view images of phantom.wrong_view with the models, derive the "
                                   "quality-control confidence thresholds by the rules of "
                                   "Training/kneetrain/calibrate.py, print them with their statistics and, with "
                                   "--write, store them in the bundles' metadata (kneealignment.qc).")
    p.add_argument("--models-dir", type=Path, required=True, metavar="DIR",
                   help="models folder with global/ and local_preop/ and/or local_postop/")
    p.add_argument("--data", action="append", required=True, type=Path, metavar="DIR",
                   help="annotated validation folder (e.g. kneealign synth output); repeatable")
    p.add_argument("--wrong-views", type=int, default=2, metavar="N",
                   help="images per wrong view (lateral knee, hand, chest, pelvis, empty; default 2)")
    p.add_argument("--write", action="store_true", help="write the thresholds into the bundles (default: only show)")
    p.add_argument("--report", type=Path, metavar="JSON", help="also write the derivation to this file")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.set_defaults(func=_cmd_calibrate)
    return parser


def _cmd_train(args) -> int:
    from .trainer import Trainer

    cfg = load_config(args.config, _overrides(args.set))
    if cfg.stage != args.stage:
        raise ConfigError(f"{args.config.name} configures the {cfg.stage} stage, not the {args.stage} stage")
    trainer = Trainer(cfg, args.data, args.out, device=args.device, resume=args.resume, split_file=args.split,
                      progress=not args.no_progress, init=args.init)
    try:
        trainer.fit(stop_after=args.epochs_now)
    finally:
        trainer.close()
    if trainer.shard.is_main:
        print(f"run folder: {args.out} (best epoch {trainer.best['epoch']}, {trainer.best['metric']} "
              f"{trainer.best['value']:.4g}); export with: kneealign-train export {args.out} --out BUNDLE")
    return 0


def _cmd_export(args) -> int:
    from .export import export_bundle

    path = export_bundle(args.checkpoint, args.out, name=args.name, version=args.version,
                         description=args.description, half=args.half, overwrite=args.overwrite)
    print(f"wrote model bundle {path}")
    return 0


def _cmd_calibrate(args) -> int:
    from .calibrate import calibrate_qc, main_report

    if args.wrong_views < 0:
        raise ConfigError(f"--wrong-views must be >= 0, got {args.wrong_views}")
    try:
        report = calibrate_qc(args.models_dir, args.data, wrong_views=args.wrong_views, write=args.write,
                              device=args.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(main_report(report, args.report))
    print("written into the bundles' metadata" if args.write else "not written (add --write to store them)")
    return 0


def main(argv=None) -> int:
    return run(build_parser(), argv, interrupted="interrupted (resume with --resume)")


if __name__ == "__main__":
    sys.exit(main())
