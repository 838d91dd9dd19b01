"""Markdown table of the imported-checkpoint calibration study (benchmarks/import_calibration*.sh).

Usage: python benchmarks/import_calibration_table.py WORK_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [("training set, 256 images (`--data`)", "train"), ("own folder, 32 images (`--calib-data DIR --calib 32`)", "folder32"),
        ("no data: ZeroQ, 32 inputs (`--calib-data zeroq`)", "zeroq32"), ("no data: ZeroQ, 32 inputs", "zeroq32s500"),
        ("no data: Gaussian noise, 32 inputs (`--zeroq-steps 0`)", "noise32")]


def zeroq_steps(work: Path, suffix: str) -> str:
    for mp in sorted(work.glob(f"*-{suffix}/metrics.json")):
        m = json.loads(mp.read_text())
        z = (m.get("calibration_source") or m.get("calibration") or {}).get("zeroq")
        if z and z["config"]["steps"]:
            return f", {z['config']['steps']} steps/batch"
    return ""


def cell(ev: dict) -> str:
    """Mean over the test sets: Acc at 0.5 / Acc at the model's stored threshold / AP, in %."""
    m = ev["mean"]
    return f"{100 * m['acc']:.1f} / {100 * m.get('acc_at_threshold', m['acc']):.1f} / {100 * m['ap']:.1f}"


def main(work: Path) -> None:
    load = lambda name: json.loads((work / f"eval_{name}.json").read_text())  # noqa: E731
    cols = [(t, t) for t in ("w8a8_minmax", "w4a4_lsq") if (work / f"eval_{t}-train.json").exists()]
    if (work / "eval_defakeq-train.json").exists():
        cols.append(("DeFakeQ 0.6 MB", "defakeq"))
    print("| calibration | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    fp = cell(load("fp"))
    print("| FP32 (imported) | " + " | ".join(fp for _ in cols) + " |")
    for label, suffix in ROWS:
        if not any((work / f"eval_{tag}-{suffix}.json").exists() for _, tag in cols):
            continue
        label = label + zeroq_steps(work, suffix)
        cells = []
        for _, tag in cols:
            p = work / f"eval_{tag}-{suffix}.json"
            cells.append(cell(json.loads(p.read_text())) if p.exists() else "—")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    for _, tag in cols:
        for _, suffix in ROWS:
            mp = work / f"{tag}-{suffix}" / "metrics.json"
            if mp.exists():
                m = json.loads(mp.read_text())
                a = m.get("calib_agreement")
                z = (m.get("calibration") or m.get("calibration_source") or {}).get("zeroq")
                src = m.get("calibration_source") or m.get("calibration") or {}
                extra = f"; ZeroQ loss {z['loss_start']:.0f} → {z['loss_end']:.1f} in {z['seconds']:.0f} s" if z else ""
                labels = f"; calib labels {src.get('real')} real / {src.get('fake')} fake" if "real" in src else ""
                if a:
                    print(f"- {tag}-{suffix}: agrees with FP on {100 * a['decision_agreement']:.1f}% of the {a['n']} "
                          f"calibration images, mean |Δlogit| {a['mean_abs_logit_diff']:.3f}{labels}{extra}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
