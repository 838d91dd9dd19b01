"""The real-media tables: packaged models × scoring policies × WildSynth test families.

Every test family (seen in training and held out), every policy of ``fakelite.eval.policy_tables.POLICY_VARIANTS``,
every model: AUC and TPR at 5 % FPR (read on each set's own ROC), plus FPR / TPR at the shipped threshold under the
stored policy. Each image is decoded once and scored by all models.

    python benchmarks/wild_tables.py --data runs/wildsynth/test --out docs/results/wild_tables \
        [--model default --model default-w4a4 --model NAME=PATH.fakelite] [--per-class N] [--threads 2]
        [--merge EARLIER.json ...]

Writes OUT.json (all numbers + host) and OUT.md (one table per policy); prints the tables. ``--merge`` adds the
models of earlier runs on the same data (so that models can be scored in parallel processes); with no ``--model``
and some ``--merge`` files, nothing is scored and the merged tables are written.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import fakelite
from fakelite.data.folders import ImageSet, discover_sets
from fakelite.deploy.host import host_info
from fakelite.eval import policy_tables as pt
from fakelite.eval.report import wide_console
from fakelite.utils.progress import progress_bar


def sample(s: ImageSet, per_class: int | None) -> ImageSet:
    """Up to ``per_class`` files of each class, evenly spaced over the sorted list (all when None)."""
    if not per_class:
        return s
    items = []
    for cls in (0, 1):
        c = [it for it in s.items if it[1] == cls]
        items += c[:: max(1, len(c) // per_class)][:per_class]
    return ImageSet(s.name, items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a WildSynth test/ folder (one set per family)")
    ap.add_argument("--out", type=Path, required=True, help="output stem: writes OUT.json and OUT.md")
    ap.add_argument("--model", action="append", default=None, help="packaged name, path, or NAME=PATH")
    ap.add_argument("--merge", type=Path, nargs="*", default=[], help="earlier OUT.json files on the same --data")
    ap.add_argument("--per-class", type=int, default=None, help="sample this many files per class and family")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--heldout", default="nearest,bilinear,lae4,gan")
    args = ap.parse_args()
    if not args.data.is_dir():
        ap.error(f"--data {args.data}: no such folder (a WildSynth test/ folder: fakelite data wild --splits test)")
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = args.model if args.model is not None else ([] if args.merge else ["default", "default-w4a4",
                                                                               "default-w2a2"])
    models = {}
    for spec in specs:  # NAME=PATH, unless the whole argument is a file or the part before "=" looks like a path
        name, _, path = spec.partition("=")
        if not path or Path(spec).exists() or "/" in name:
            name, path = spec, spec
        if name in models:
            ap.error(f"--model {spec}: the name {name!r} is given twice")
        models[name] = fakelite.load(path)
    sets = [sample(s, args.per_class) for s in discover_sets(args.data)]
    t0 = time.time()
    summary, skipped, wall, walls = {}, {s.name: {} for s in sets}, 0.0, []
    if models:
        with progress_bar("scoring", sum(len(s.items) for s in sets)) as adv:
            scores = pt.score_sets(models, sets, advance=adv)
        wall = time.time() - t0
        summary, skipped = pt.summarize(scores, models), scores["skipped"]
        walls.append(round(wall, 1))
    merged: dict = {}
    for earlier in args.merge:
        e = json.loads(earlier.read_text())
        if Path(e["data"]) != args.data or e["per_class"] != args.per_class:
            ap.error(f"--merge {earlier}: scored on {e['data']} (per class {e['per_class']}), not on this --data")
        clash = (set(e["summary"]) & set(merged)) | (set(e["summary"]) & set(models))
        if clash:
            ap.error(f"--merge {earlier}: model(s) {sorted(clash)} also come from another run")
        merged.update(e["summary"])
        walls.extend(e.get("wall_s_runs") or [e["wall_s"]])
        for fam, files in (e.get("skipped") or {}).items():
            skipped.setdefault(fam, {}).update(files)
    summary = {**merged, **summary}  # earlier runs' models first, in their order
    names = list(summary)
    heldout = [h for h in args.heldout.split(",") if h]
    order = sorted((s.name for s in sets), key=lambda n: (n in heldout, n))
    con = wide_console()
    con.print(pt.policy_table(summary, order, title="mean over the test families (AUC, TPR at 5 % FPR; FPR/TPR at "
                                                    "the shipped threshold under the stored policy)"))
    md = [f"Data: `{args.data}` ({', '.join(f'{s.name} {len(s.items)}' for s in sets)} files); * = held out of "
          f"training. Cells: AUC / TPR at 5 % FPR (on each set's ROC).", ""]
    for v in pt.POLICY_VARIANTS:
        con.print(pt.family_table(summary, v, order, heldout=heldout))
        md += [f"### policy {v}", "", pt.markdown(summary, v, order, heldout), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"data": str(args.data), "per_class": args.per_class, "models": names, "summary": summary,
         "skipped": skipped, "wall_s": round(sum(walls), 1),
         "wall_s_runs": walls, "host": host_info(),
         "threads": torch.get_num_threads()}, indent=2) + "\n")
    if models:
        print(f"scored {sum(len(s.items) for s in sets)} files with {len(models)} models in {wall:.0f} s")


if __name__ == "__main__":
    main()
