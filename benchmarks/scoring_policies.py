"""Cost of the scoring policies: end-to-end time to score one large image (decode excluded) under center,
resize256 and tiles, interleaved round by round in one process so that load on a shared host hits all alike.

    PYTHONPATH=src python benchmarks/scoring_policies.py --model m.fakelite --image-size 1024 --threads 1

Prints one JSON line per policy: crops per image, median ms, ratio to center. --model takes any model the
Detector opens (.fakelite, .onnx, .tflite or a packaged name); --backend picks the runtime.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()

    import torch

    from fakelite.deploy.runtime import Detector

    torch.set_num_threads(args.threads)
    det = Detector.load(args.model, backend=args.backend, threads=args.threads)
    img = np.random.default_rng(0).integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
    policies = ("center", "resize256", "tiles")
    times: dict[str, list[float]] = {p: [] for p in policies}
    crops = {}
    for r in range(args.rounds + 2):
        for p in policies:
            det.set_scoring(policy=p)
            crops[p] = len(det.crops(img))
            t0 = time.perf_counter()
            det.predict_arrays([img])
            if r >= 2:  # two warm-up rounds
                times[p].append((time.perf_counter() - t0) * 1e3)
    base = float(np.median(times["center"]))
    for p in policies:
        med = float(np.median(times[p]))
        print(json.dumps({"policy": p, "crops": crops[p], "median_ms": round(med, 2), "ratio_to_center":
                          round(med / base, 2), "image_size": args.image_size, "crop": det.preprocess.crop,
                          "max_tiles": det.preprocess.max_tiles, "backend": det.backend, "threads": args.threads,
                          "cpu": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
