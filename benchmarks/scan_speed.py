"""Images/s of `fakelite scan` with 1 and 2 worker processes (the same files, fresh results folders).

Each round scans the folder once with every worker count (alternating, so slow phases of a shared machine hit
both); the rate is the scan's steady rate (files after the first result / time since it: worker start-up and
model load excluded). Prints JSON and, with --out, writes a Markdown table.

Example:
    .venv/bin/python benchmarks/scan_speed.py --model runs/demo/fp/model.fakelite --images 400 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def cpu_line() -> str:
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("?", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16") if f in flags]
    return f"{model} ({', '.join(keep)}), {os.cpu_count()} cores"


def make_images(d: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        img.save(d / f"{i:05d}.jpg", quality=90)


def main(argv: list[str] | None = None) -> int:
    from fakelite.pipelines.scan import ScanOptions, run_scan

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (JPEG)")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--faces", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="write a Markdown table here")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="scan-speed-"))
    try:
        make_images(tmp / "images", args.images, args.size)
        rates: dict[int, list[float]] = {w: [] for w in counts}
        walls: dict[int, list[float]] = {w: [] for w in counts}
        cpu: dict[int, list[float]] = {w: [] for w in counts}  # CPU seconds of the worker processes per file
        for r in range(args.rounds):
            for w in counts:
                out = tmp / f"res-{w}-{r}"
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                s = run_scan([tmp / "images"], args.model, out, ScanOptions(faces=args.faces), workers=w)
                assert s["scored"] == args.images, s
                after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's workers have exited by now
                used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                rates[w].append(s["files_per_s"])
                walls[w].append(s["wall_s"])
                cpu[w].append(used / args.images)
                print(f"round {r} workers {w}: {s['files_per_s']:.1f} files/s (wall {s['wall_s']:.1f} s, workers' CPU "
                      f"{used:.1f} s = {used / s['wall_s']:.2f} cores on average)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(rates[counts[0]])
    res = {"host": cpu_line(), "python": platform.python_version(), "images": args.images, "size": args.size,
           "faces": args.faces, "model": args.model.name, "rounds": args.rounds,
           "load_avg_1min_end": round(os.getloadavg()[0], 2), "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "files_per_s": {w: rates[w] for w in counts},
           "median_files_per_s": {w: round(statistics.median(rates[w]), 2) for w in counts},
           "worker_cpu_s_per_file": {w: [round(x, 4) for x in cpu[w]] for w in counts},
           "cores_used": {w: [round(c * args.images / wl, 2) for c, wl in zip(cpu[w], walls[w], strict=True)]
                          for w in counts},
           "speedup_vs_first": {w: round(statistics.median(rates[w]) / base, 3) for w in counts}}
    print(json.dumps(res, indent=1))
    if args.out:
        lines = ["| workers | files/s per round | median | × vs 1 | workers' CPU s per file (incl. start-up) | cores "
                 "the workers got (CPU s / wall s) |", "|---|---|---|---|---|---|"]
        lines += [f"| {w} | {', '.join(f'{x:.1f}' for x in rates[w])} | {res['median_files_per_s'][w]} | "
                  f"{res['speedup_vs_first'][w]:.2f} | {', '.join(f'{x:.3f}' for x in cpu[w])} | "
                  f"{', '.join(f'{x:.2f}' for x in res['cores_used'][w])} |" for w in counts]
        args.out.write_text("\n".join(lines) + f"\n\nHost: {res['host']}; load average at the end "
                            f"{res['load_avg_1min_end']}; {args.images} JPEGs {args.size}²; model {args.model.name}.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
