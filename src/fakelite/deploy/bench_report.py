"""How `fakelite bench` reports: one table for one backend or many, ratios against a named baseline.

A bench result is either one run (`run_bench`: {"backend", "latency_ms", ...}) or a comparison (`compare`:
{"results": {name: run}, "speedup_vs_<first>": {name: ratio}}). `add_baseline` puts a full-precision PyTorch run
in front (row `torch-fp32`) and recomputes the ratios against it, so a quantized model's integer graph is compared
with the FP32 model rather than with its own fake-quant PyTorch form (which simulates quantization in float and is
several times slower than FP32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fakelite.artifact import read

BASELINE = "torch-fp32"


def _rows(res: dict[str, Any]) -> tuple[dict[str, dict], str | None, dict[str, float]]:
    if "results" not in res:
        return {res["backend"]: res}, None, {}
    key = next((k for k in res if k.startswith("speedup_vs_")), None)
    return res["results"], (key.removeprefix("speedup_vs_") if key else None), (res.get(key) or {})


def add_baseline(res: dict[str, Any], fp_res: dict[str, Any]) -> dict[str, Any]:
    """`res` (a comparison) with `fp_res`'s torch run first as `torch-fp32` and every ratio against it.

    Ratio = baseline median latency / row median latency (>1: faster than FP32 PyTorch)."""
    base = fp_res["results"]["torch"]
    results = {BASELINE: base, **res["results"]}
    med = base["latency_ms"]["median"]
    out = {k: v for k, v in res.items() if not k.startswith("speedup_vs_") and k != "results"}
    out["results"] = results
    out[f"speedup_vs_{BASELINE}"] = {b: round(med / r["latency_ms"]["median"], 3) for b, r in results.items()}
    return out


def bench_table(res: dict[str, Any]) -> str:
    """Fixed-width table: backend, median/p90 ms, img/s, peak RSS, model bytes, GMAC/s and the fraction of the
    host's int8 peak when known, and the ratio column when there is a baseline."""
    rows, base, ratios = _rows(res)
    width = max(10, *(len(b) for b in rows))
    lines = []
    for b, r in rows.items():
        line = (f"{b:{width}s} median {r['latency_ms']['median']:8.2f} ms  p90 {r['latency_ms']['p90']:8.2f} ms  "
                f"{r['throughput_ips']:8.1f} img/s  RSS {r['peak_rss_mb']:6.0f} MB  {r['model_bytes']:>11,} B")
        if r.get("gmac_per_s"):
            line += f"  {r['gmac_per_s']:7.1f} GMAC/s"
            if r.get("peak_fraction") is not None:
                line += f" ({100 * r['peak_fraction']:.1f} % of int8 peak {r['int8_peak_gmac_per_s']:.0f})"
        if base is not None and b in ratios:
            line += f"  ×{ratios[b]:.2f} vs {base}"
        lines.append(line)
    first = next(iter(rows.values()))
    lines.append(f"(size {first['size']}, batch {first['batch']}, {first['threads']} thread(s); "
                 "×: baseline median / row median)" if base else
                 f"(size {first['size']}, batch {first['batch']}, {first['threads']} thread(s))")
    return "\n".join(lines)


def fake_quant_note(model: Path, res: dict[str, Any], fp_model: Path | None) -> str | None:
    """A note when the ratios' baseline is a quantized model's fake-quant PyTorch run; None otherwise."""
    rows, base, _ = _rows(res)
    if fp_model is not None or base != "torch" or Path(model).suffix.lower() != ".fakelite":
        return None
    try:
        quant = bool(read(model)[0].get("quant"))
    except Exception:  # noqa: BLE001 - a note is never fatal
        return None
    if not quant:
        return None
    return ("note: the baseline `torch` runs this quantized model's fake-quant PyTorch form (quantization "
            "simulated in float, slower than FP32); pass --fp-model FP.fakelite for ratios against FP32 PyTorch")
