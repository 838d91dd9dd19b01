#!/bin/sh
# Imported-checkpoint calibration study (docs/import.md): an FP npr_resnet23 trained on FaceSynth is written out in
# NPR's official checkpoint layout, imported with `fakelite import`, then quantized by PTQ calibrated on
# (a) the training set, (b) a small folder of 32 of the user's own images (FaceSynth val), (c) nothing (ZeroQ).
# Usage: sh benchmarks/import_calibration.sh FACESYNTH_DIR FP_MODEL WORK_DIR [ZEROQ_STEPS]
set -eu
DATA=$1; FP=$2; W=$3; ZSTEPS=${4:-500}
FL="python -m fakelite"
mkdir -p "$W"
python - "$FP" "$W/NPR.pth" <<'PY'
import sys, torch, fakelite
m = fakelite.load(sys.argv[1])
sd = {("fc1." + k[3:] if k.startswith("fc.") else k): v for k, v in m.state_dict().items()}  # NPR's head name
torch.save(sd, sys.argv[2])
print(f"wrote {sys.argv[2]}: {len(sd)} tensors")
PY
$FL import "$W/NPR.pth" --format npr --out "$W/npr.fakelite" --crop 64
$FL eval --model "$W/npr.fakelite" --data "$DATA/test" --json "$W/eval_fp.json" --threads 1 > /dev/null
for Q in "8 8 minmax" "4 4 lsq"; do
  set -- $Q; WB=$1; AB=$2; QZ=$3; TAG=w${WB}a${AB}_$QZ
  $FL quantize --model "$W/npr.fakelite" --ptq --data "$DATA" --calib 256 --out "$W/$TAG-train" \
      --w-bits $WB --a-bits $AB --quantizer $QZ --threads 1 --quiet
  $FL quantize --model "$W/npr.fakelite" --ptq --calib-data "$DATA/val" --calib 32 --out "$W/$TAG-folder32" \
      --w-bits $WB --a-bits $AB --quantizer $QZ --threads 1 --quiet
  $FL quantize --model "$W/npr.fakelite" --ptq --calib-data zeroq --calib 32 --zeroq-steps "$ZSTEPS" --size 64 \
      --out "$W/$TAG-zeroq32" --w-bits $WB --a-bits $AB --quantizer $QZ --threads 1 --quiet
  for S in train folder32 zeroq32; do
    $FL eval --model "$W/$TAG-$S/model.fakelite" --data "$DATA/test" --json "$W/eval_$TAG-$S.json" --threads 1 > /dev/null
  done
done
