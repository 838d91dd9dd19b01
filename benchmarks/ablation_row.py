"""One row of the QMDD study, trained and evaluated with the settings of a published study, so that a row added
later sits next to the published ones without re-running all of them (e.g. the deployable W2A2 row of #14).

    python benchmarks/ablation_row.py --row lsq_w2a2_deploy --fp-npr runs/demo4/fp/model.fakelite \
        [--config docs/results/qmdd-ablation.json] [--work runs/ablation_rows] [--out ROW.json] [--threads 1]

Reads the study's ``config`` (data, size, epochs, lr, schedule, calibration, clipping, seed) from --config, trains
the row's QAT from --fp-npr (the FP NPR model that study used, or a bit-identical re-run of it: its sha256 is
recorded; compare the study's FP NPR row with `fakelite eval` when in doubt) through
``fakelite.studies.qmdd_ablation.run_row`` and writes the row's JSON (per-set Acc/AP/AUC, mean, cost, wall time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from fakelite.data.folders import discover_sets
from fakelite.eval.robustness import subsample
from fakelite.studies import qmdd_ablation as qa


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", required=True, choices=sorted(qa.ROWS))
    ap.add_argument("--fp-npr", required=True, type=Path)
    ap.add_argument("--config", type=Path, default=Path("docs/results/qmdd-ablation.json"))
    ap.add_argument("--work", type=Path, default=Path("runs/ablation_rows"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pub = json.loads(a.config.read_text())["config"]
    fields = qa.StudyConfig.__dataclass_fields__
    cfg = qa.StudyConfig(**{k: v for k, v in pub.items() if k in fields and k != "rows"})
    cfg.work, cfg.fp_npr, cfg.threads = str(a.work), str(a.fp_npr), a.threads
    row = qa.ROWS[a.row]
    if row.quant is None or row.input != "npr":
        ap.error(f"--row {a.row}: only quantized rows on the NPR detector can be added this way")
    data = Path(cfg.data)
    sets = discover_sets(data / "test")
    if cfg.eval_per_set:  # as run_study does
        sets = subsample(sets, cfg.eval_per_set, cfg.seed)
    crop = qa.data_crop(data, cfg.size)
    fp_path, sig = qa.resolve_fp(cfg, "fp_npr", cfg.fp_npr)
    t0 = time.time()
    r = qa.run_row(row, cfg, crop, sets, {"fp_npr": fp_path}, {"fp_npr": sig})
    r.update(wall_s=round(time.time() - t0, 1), config=str(a.config), fp_npr=str(a.fp_npr), threads=a.threads,
             fp_npr_sha256=hashlib.sha256(a.fp_npr.read_bytes()).hexdigest())
    out = a.out or a.work / f"{a.row}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2, default=str) + "\n")
    print(f"{row.label}: mean Acc {100 * r['mean']['acc']:.1f} %, AP {100 * r['mean']['ap']:.1f} % "
          + " ".join(f"{k} {100 * v['acc']:.1f}/{100 * v['ap']:.1f}" for k, v in r["test"].items()) + f" → {out}")


if __name__ == "__main__":
    main()
