#!/usr/bin/env bash
# Reproduces the models shipped in KneeAlignment/Resources/Models and their accuracy reports
# (README "Accuracy"): phantom data, the three lite stages, export, evaluation.
#
#   bash Training/train_shipped_models.sh [data|train|export|calibrate|evaluate|all] [WORK]
#
# Release 1.1.0 (shipped) is release 1.0.0 (30-32 epochs from scratch on 600 + 600 phantoms of
# the first generator: `git show 388c9f9` has its weights) fine-tuned on the phantom calibrated
# against real films: knee radiographs (1024 x 832) and knees cut from standing long-leg films
# (1400 x 672: the other leg, rulers, seams, 8-bit JPEG), with the film-look, occluder,
# inversion and field-of-view augmentation of Training/configs/*_lite.yaml. `train` starts
# each stage from the bundle in KneeAlignment/Resources/Models (--init), so run it on 1.0.0's
# bundles to reproduce 1.1.0.
#
# WORK (default runs/shipped) receives the data and the run folders; the reports go to
# docs/accuracy/{preop,postop,longleg_preop,longleg_postop,longleg_auto}. Run it in the project's
# virtual environment from the repository root. Seeds: training 1001/1011 (pre-op) and
# 1002/1012 (post-op); test 9001/9011 and 9002/9012, disjoint from training and from the
# trainer's own phantom streams. Times on 2 CPU cores: see Training/README.md.
set -euo pipefail

step="${1:-all}"
work="${2:-runs/shipped}"
models="KneeAlignment/Resources/Models"
configs="Training/configs"
knee=(1024 832)     # H W: a knee radiograph, about 0.3 mm/px
longleg=(1400 672)  # H W: a knee cut from a standing long-leg film, about 0.22 mm/px
epochs=8            # of fine-tuning (the schedule's length)
stop_global=4       # the global stage was stopped after this epoch (time); its best epoch is exported
epochs_postop=4     # the post-op local stage had time for a shorter schedule

data() {
    synth() { kneealign synth --kind "$1" --n "$2" --seed "$3" --size "${@:4:2}" --workers 2 --out "$work/$6"; }
    synth preop 300 1001 "${knee[@]}" train/preop/knee
    synth preop 300 1011 "${longleg[@]}" train/preop/longleg
    synth postop 300 1002 "${knee[@]}" train/postop/knee
    synth postop 300 1012 "${longleg[@]}" train/postop/longleg
    synth preop 150 9001 "${knee[@]}" test/preop
    synth postop 100 9002 "${knee[@]}" test/postop
    synth preop 100 9011 "${longleg[@]}" test_longleg/preop
    synth postop 100 9012 "${longleg[@]}" test_longleg/postop
    synth preop 40 5001 "${knee[@]}" validation/preop_knee  # QC calibration, never the test sets
    synth preop 40 5011 "${longleg[@]}" validation/preop_longleg
    synth postop 40 5002 "${knee[@]}" validation/postop_knee
    synth postop 40 5012 "${longleg[@]}" validation/postop_longleg
    merge_manifests "$work/train/preop" knee longleg
    merge_manifests "$work/train/postop" knee longleg
    merge_manifests "$work/train" preop/knee preop/longleg postop/knee postop/longleg  # the global stage: all
    merge_manifests "$work/test_longleg" preop postop  # --model auto is evaluated on both kinds
}

# One manifest.csv in ROOT over phantom folders ROOT/SUB... (case ids prefixed by SUB).
merge_manifests() {
    python - "$@" <<'EOF'
import csv, sys
from pathlib import Path
root, subs = Path(sys.argv[1]), sys.argv[2:]
rows = []
for sub in subs:
    with open(root / sub / "manifest.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.append({"case_id": f"{sub.replace('/', '-')}-{row['id']}", "image": f"{sub}/{row['dicom']}",
                         "markups": f"{sub}/{row['markups']}", "kind": row["kind"], "side": row["side"]})
with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
    out = csv.DictWriter(f, fieldnames=list(rows[0]))
    out.writeheader()
    out.writerows(rows)
EOF
}

train() {
    # validation split only: the test sets are the separate folders above
    local common=(--set data.split.test=0 --set optim.lr=0.0005 --no-progress)
    local t="$work/train"
    OMP_NUM_THREADS=1 kneealign-train global --config "$configs/global_lite.yaml" --init "$models/global" \
        --data "$t" --set optim.epochs=$epochs --set optim.warmup_epochs=1 --epochs-now "$stop_global" \
        --out "$work/global" "${common[@]}" > "$work/global.log" 2>&1 &
    local kind schedule
    for kind in preop postop; do
        schedule=(--set optim.epochs=$epochs --set optim.warmup_epochs=1)
        [ "$kind" = postop ] && schedule=(--set optim.epochs=$epochs_postop --set optim.warmup_epochs=0.5)
        OMP_NUM_THREADS=1 kneealign-train local --config "$configs/local_${kind}_lite.yaml" \
            --init "$models/local_$kind" --data "$t/$kind" "${schedule[@]}" \
            --out "$work/local_$kind" "${common[@]}" > "$work/local_$kind.log" 2>&1 &
    done
    local job
    for job in $(jobs -p); do wait "$job"; done  # a failed stage fails the script
}

export_models() {
    local stage what
    for stage in global local_preop local_postop; do
        what="${stage/local_/}"; what="${what/global/reference points}"
        kneealign-train export "$work/$stage" --out "$models/$stage" --version 1.1.0 --overwrite \
            --description "KneeAlignment $stage stage ($what), lite preset. Trained on synthetic radiographs only (the project's phantom: release 1.0.0 trained on 600 pre-op and 600 post-op cases, then fine-tuned (global $stop_global epochs, pre-op local $epochs, post-op local $epochs_postop) on 600 + 600 cases of the phantom calibrated against real films, half of them knees cut from long-leg films; kneealign synth seeds 1001, 1011, 1002, 1012); its accuracy on real radiographs is unknown until it is validated on clinical data. Research use only: not for clinical use."
    done
}

calibrate() {  # QC thresholds into the bundles' metadata, then the pinned list of known releases
    local v="$work/validation"
    kneealign-train calibrate-qc --models-dir "$models" --data "$v/preop_knee" --data "$v/preop_longleg" \
        --data "$v/postop_knee" --data "$v/postop_longleg" --wrong-views 4 --report "$work/qc_calibration.json" --write
    python -m KneeAlignmentLib.bundle.known
}

evaluate() {  # the reports README "Accuracy" shows
    for kind in preop postop; do
        kneealign evaluate --models-dir "$models" --data "$work/test/$kind" --out "docs/accuracy/$kind"
    done
    kneealign evaluate --models-dir "$models" --data "$work/test_longleg" --model auto --out docs/accuracy/longleg_auto
    for kind in preop postop; do  # knees cut from long-leg films, the nearest the phantom gets to the real films
        kneealign evaluate --models-dir "$models" --data "$work/test_longleg/$kind" --out "docs/accuracy/longleg_$kind"
    done
}

mkdir -p "$work"
case "$step" in
    data) data ;;
    train) train ;;
    export) export_models ;;
    calibrate) calibrate ;;
    evaluate) evaluate ;;
    all) data; train; export_models; calibrate; evaluate ;;
    *) echo "usage: $0 [data|train|export|calibrate|evaluate|all] [WORK]" >&2; exit 2 ;;
esac
