"""The `fakelite prune` pipeline: load a .fakelite, prune it (structured or unstructured, fakelite.compress.prune),
optionally fine-tune it, save the pruned model and a before/after report (params, MACs, packed size, CPU latency,
test metrics)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fakelite import artifact
from fakelite.compress.measure import input_size, summarize
from fakelite.compress.prune import PruneConfig, keep_masks, prune_structured, prune_unstructured, sparsity
from fakelite.train.loop import TrainConfig, fit


def run_prune(model_path: str | Path, out: str | Path, cfg: PruneConfig, *, data: str | Path | None = None,
              finetune_epochs: int = 0, train_cfg: Any = None, latency_runs: int = 30,
              quiet: bool = False) -> dict[str, Any]:
    """Load a .fakelite, prune it, optionally fine-tune (`fakelite.train.loop.fit` on DATA/train, DATA/val),
    save OUT/model.fakelite and OUT/prune_report.json; returns the report {"before", "after", "config", ...}.

    Before/after rows: params, MACs, packed bytes, CPU latency (batch 1, 1 thread, median) and, when DATA has a
    test/ folder (or is itself a test root), mean and per-set Acc/AP/AUC.
    """
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = artifact.load(model_path)
    if getattr(model, "fakelite_quant", None):
        raise ValueError(f"{model_path}: prune the full-precision model, then quantize (this one is quantized)")
    test_root = None
    if data is not None:
        d = Path(data)
        test_root = d / "test" if (d / "test").is_dir() else (None if (d / "train").is_dir() else d)
    size = input_size(model)
    before = summarize(model, data=test_root, size=size, latency_runs=latency_runs)
    threshold = float(getattr(model, "threshold", 0.5))
    if cfg.structured:
        prune_structured(model, cfg.ratio, global_pruning=cfg.global_pruning, size=min(size, 64),
                         max_layer_ratio=cfg.max_layer_ratio, round_to=cfg.round_to)
        masks = None
    else:
        masks = prune_unstructured(model, cfg.ratio, global_pruning=cfg.global_pruning)
    after_prune_sparsity = sparsity(model)
    prov = {**(getattr(model, "provenance", {}) or {}), "pruned_from": str(model_path), "prune": cfg.to_dict()}
    ft_metrics = None
    if finetune_epochs > 0:
        if data is None:
            raise ValueError("--finetune-epochs needs --data (with train/ and val/)")
        tc = train_cfg or TrainConfig(lr=1e-4, lr_schedule="cosine", crop=size, quiet=quiet)
        tc.epochs = finetune_epochs
        model.train()
        if masks is not None:
            with keep_masks(model, masks):
                ft_metrics = fit(model, data, out, tc, provenance=prov)
        else:
            ft_metrics = fit(model, data, out, tc, provenance=prov)
        threshold = float(ft_metrics["threshold"])
    else:
        artifact.save(model, out / "model.fakelite", threshold=threshold, provenance=prov)
    model = artifact.load(out / "model.fakelite")
    after = summarize(model, data=test_root, size=size, latency_runs=latency_runs)
    after["packed_bytes"] = (out / "model.fakelite").stat().st_size
    report = {
        "model": str(model_path), "out": str(out / "model.fakelite"), "config": cfg.to_dict(),
        "finetune_epochs": finetune_epochs, "size": size, "threshold": threshold,
        "sparsity": {"after_pruning": after_prune_sparsity, "final": sparsity(model)},
        "before": before, "after": after,
        "ratios": {k: (before[k] / after[k] if after[k] else None) for k in ("params", "macs", "packed_bytes",
                                                                              "latency_ms")},
        "finetune": {k: ft_metrics[k] for k in ("best_epoch", "val", "wall_seconds")} if ft_metrics else None,
        "wall_seconds": time.time() - t0,
    }
    (out / "prune_report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def print_prune_report(report: dict[str, Any]) -> None:
    """Before/after table on the terminal."""
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    b, a = report["before"], report["after"]
    kind = "structured" if report["config"]["structured"] else "unstructured"
    t = Table(title=f"{kind} pruning, ratio {report['config']['ratio']} "
                    f"({'global' if report['config']['global_pruning'] else 'per layer'})")
    for c in ["", "params", "MACs (M)", "nonzero MACs (M)", "packed kB", "CPU ms", "Acc", "AP", "AUC"]:
        t.add_column(c, justify="left" if not c else "right")
    for name, r in (("before", b), ("after", a)):
        te = r.get("test", {})
        t.add_row(name, f"{r['params']:,}", f"{r['macs'] / 1e6:.1f}", f"{r['nonzero_macs'] / 1e6:.1f}",
                  f"{r['packed_bytes'] / 1e3:.0f}", f"{r['latency_ms']:.2f}", pct(te.get("acc")), pct(te.get("ap")),
                  pct(te.get("auc")))
    Console(width=max(120, Console().width)).print(t)
