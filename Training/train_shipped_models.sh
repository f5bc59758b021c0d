#!/usr/bin/env bash
# Reproduces the models shipped in KneeAlignment/Resources/Models and their accuracy report
# (README "Accuracy"): phantom data, the three lite stages, export, evaluation.
#
#   bash Training/train_shipped_models.sh [data|train|export|evaluate|all] [WORK]
#
# WORK (default runs/shipped) receives the data and the run folders; the reports go to
# docs/accuracy/{preop,postop,auto}. Run it in
# the project's virtual environment from the repository root. On 2 CPU cores `data` takes
# about 10 minutes, `train` 80 (the three stages train side by side, one thread each),
# `evaluate` about 5. Seeds: training 1001 (pre-op) and 1002 (post-op); test 9001 and
# 9002, disjoint from training and from the trainer's own phantom streams.
set -euo pipefail

step="${1:-all}"
work="${2:-runs/shipped}"
models="KneeAlignment/Resources/Models"
configs="Training/configs"
size=(1024 832)  # H W, about 0.3 mm/px

data() {
    kneealign synth --kind preop --n 600 --seed 1001 --size "${size[@]}" --workers 2 --out "$work/train/preop"
    kneealign synth --kind postop --n 600 --seed 1002 --size "${size[@]}" --workers 2 --out "$work/train/postop"
    kneealign synth --kind preop --n 300 --seed 9001 --size "${size[@]}" --workers 2 --out "$work/test/preop"
    kneealign synth --kind postop --n 300 --seed 9002 --size "${size[@]}" --workers 2 --out "$work/test/postop"
    merge_manifests "$work/train"  # the global stage trains on both kinds
    merge_manifests "$work/test"   # --model auto is evaluated on both
}

# One manifest.csv in FOLDER over FOLDER/preop and FOLDER/postop (case ids prefixed by kind).
merge_manifests() {
    python - "$1" <<'EOF'
import csv, sys
from pathlib import Path
root = Path(sys.argv[1])
rows = []
for kind in ("preop", "postop"):
    with open(root / kind / "manifest.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.append({"case_id": f"{kind}-{row['id']}", "image": f"{kind}/{row['dicom']}",
                         "markups": f"{kind}/{row['markups']}", "kind": kind, "side": row["side"]})
with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
    out = csv.DictWriter(f, fieldnames=list(rows[0]))
    out.writeheader()
    out.writerows(rows)
EOF
}

train() {
    # validation split only: the test sets are the separate folders above
    local common=(--set data.split.test=0 --no-progress)
    OMP_NUM_THREADS=1 kneealign-train global --config "$configs/global_lite.yaml" --data "$work/train" \
        --out "$work/global" "${common[@]}" > "$work/global.log" 2>&1 &
    OMP_NUM_THREADS=1 kneealign-train local --config "$configs/local_preop_lite.yaml" --data "$work/train/preop" \
        --out "$work/local_preop" "${common[@]}" > "$work/local_preop.log" 2>&1 &
    OMP_NUM_THREADS=1 kneealign-train local --config "$configs/local_postop_lite.yaml" --data "$work/train/postop" \
        --out "$work/local_postop" "${common[@]}" > "$work/local_postop.log" 2>&1 &
    local job
    for job in $(jobs -p); do wait "$job"; done  # a failed stage fails the script
}

export_models() {
    local stage what
    for stage in global local_preop local_postop; do
        what="${stage/local_/}"; what="${what/global/reference points}"
        kneealign-train export "$work/$stage" --out "$models/$stage" --version 1.0.0 --overwrite \
            --description "KneeAlignment $stage stage ($what), lite preset. Trained on synthetic radiographs only (the project's phantom: kneealign synth, seeds 1001 and 1002, 600 pre-op and 600 post-op cases); its accuracy on real radiographs is unknown until it is validated on clinical data. Research use only: not for clinical use."
    done
}

evaluate() {  # the reports README "Accuracy" shows
    for kind in preop postop; do
        kneealign evaluate --models-dir "$models" --data "$work/test/$kind" --out "docs/accuracy/$kind"
    done
    kneealign evaluate --models-dir "$models" --data "$work/test" --model auto --out docs/accuracy/auto
}

mkdir -p "$work"
case "$step" in
    data) data ;;
    train) train ;;
    export) export_models ;;
    evaluate) evaluate ;;
    all) data; train; export_models; evaluate ;;
    *) echo "usage: $0 [data|train|export|evaluate|all] [WORK]" >&2; exit 2 ;;
esac
