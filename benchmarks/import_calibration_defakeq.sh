#!/bin/sh
# DeFakeQ on an imported checkpoint without its training set (docs/import.md). Run after import_calibration.sh
# (uses WORK_DIR/npr.fakelite). Usage: sh benchmarks/import_calibration_defakeq.sh FACESYNTH_DIR WORK_DIR [ZEROQ_STEPS] [BUDGET_MB]
set -eu
DATA=$1; W=$2; ZSTEPS=${3:-500}; BUDGET=${4:-0.6}
FL="python -m fakelite"
$FL quantize --model "$W/npr.fakelite" --recipe defakeq --budget-mb "$BUDGET" --data "$DATA" --calib 256 \
    --out "$W/defakeq-train" --threads 1 --quiet
$FL quantize --model "$W/npr.fakelite" --recipe defakeq --budget-mb "$BUDGET" --calib-data "$DATA/val" --calib 32 \
    --out "$W/defakeq-folder32" --threads 1 --quiet
$FL quantize --model "$W/npr.fakelite" --recipe defakeq --budget-mb "$BUDGET" --calib-data zeroq --calib 32 \
    --zeroq-steps "$ZSTEPS" --zeroq-label-weight 10 --size 64 --out "$W/defakeq-zeroq32" --threads 1 --quiet
for S in train folder32 zeroq32; do
  $FL eval --model "$W/defakeq-$S/model.fakelite" --data "$DATA/test" --json "$W/eval_defakeq-$S.json" --threads 1 > /dev/null
done
