"""The QMDD study's report: the Markdown tables (Fig. 9, Table 2 lower half, Table 4, Fig. 7, CQB α, the deployable
W2A2 row, wall times), the two PNG charts and the targets checked on the measured numbers. Everything reads the
study's JSON (`fakelite.studies.qmdd_ablation.run_study`'s result): the row groups come from its "fig9", "table2",
"cqb_study" and "deployable_w2a2" keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- charts


def _bar_groups(ax, labels: list[str], series: dict[str, list[float]], ylabel: str, colors: list[str]) -> None:
    n = len(series)
    width = 0.8 / max(1, n)
    x = np.arange(len(labels))
    for i, (name, vals) in enumerate(series.items()):
        bars = ax.bar(x + (i - (n - 1) / 2) * width, [100 * v for v in vals], width, label=name,
                      color=colors[i % len(colors)])
        for b, v in zip(bars, vals, strict=False):
            ax.text(b.get_x() + b.get_width() / 2, 100 * v + 0.5, f"{100 * v:.0f}", ha="center", va="bottom",
                    fontsize=6)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(ylabel)
    lo = min([100 * v for vals in series.values() for v in vals] + [50])
    ax.set_ylim(max(0, math.floor(lo / 10) * 10 - 5), 105)
    ax.grid(axis="y", alpha=0.3)


FIG9_COLORS = ["#4c72b0", "#dd8899", "#8c564b", "#7b3fa0"]
T2_COLORS = ["#999999", "#555555", "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#cc79a7", "#7b3fa0", "#d55e00"]


def plot_fig9(result: dict, out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, sets = result["rows"], result["sets"]
    labels = [s + (" (seen)" if s == result.get("seen") else "") for s in sets] + ["mean"]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(labels) + 2), 7.5))
    for ax, metric, name in ((axes[0], "acc", "Acc (%)"), (axes[1], "ap", "AP (%)")):
        series = {rows[k]["label"]: [rows[k]["test"][s][metric] or 0 for s in sets] + [rows[k]["mean"][metric] or 0]
                  for k in result["fig9"] if k in rows}
        _bar_groups(ax, labels, series, name, FIG9_COLORS)
    axes[0].legend(fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"QMDD Fig. 9 ablation, W2A2 npr_resnet23 on {result['data_name']} ({result['size']}²)", y=0.995)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_table2(result: dict, out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    keys = [k for k in result["table2"] if k in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(keys))
    acc = [100 * (rows[k]["mean"]["acc"] or 0) for k in keys]
    ap = [100 * (rows[k]["mean"]["ap"] or 0) for k in keys]
    ax.bar(x - 0.2, acc, 0.4, label="mean Acc", color="#4c72b0")
    ax.bar(x + 0.2, ap, 0.4, label="mean AP", color="#dd8452")
    for i in range(len(keys)):
        ax.text(x[i] - 0.2, acc[i] + 0.5, f"{acc[i]:.0f}", ha="center", fontsize=7)
        ax.text(x[i] + 0.2, ap[i] + 0.5, f"{ap[i]:.0f}", ha="center", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels([rows[k]["label"].replace(" (", "\n(") for k in keys], fontsize=7, rotation=20, ha="right")
    ax.set_ylim(max(0, min(acc + ap + [50]) - 10), 105)
    ax.set_ylabel("% (mean over test sets)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Table 2 (lower half): mean Acc / AP", fontsize=10)
    for i, k in enumerate(keys):
        c = rows[k]["cost"]["224"]
        ax2.scatter(c["storage_bytes"] / 1e6, 100 * (rows[k]["mean"]["acc"] or 0), color=T2_COLORS[i % len(T2_COLORS)],
                    s=45, zorder=3, marker="os^Dv<>p*"[i % 9], label=rows[k]["label"].split(" (")[0])
    ax2.legend(fontsize=7, loc="best")
    ax2.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    mbs = [rows[k]["cost"]["224"]["storage_bytes"] / 1e6 for k in keys]
    ax2.set_xlim(min(mbs) / 1.4, max(mbs) * 1.4)
    ax2.set_xticks([t for t in (0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20, 50, 100)
                    if min(mbs) / 1.4 <= t <= max(mbs) * 1.4])
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax2.xaxis.set_minor_formatter(NullFormatter())
    ax2.set_xlabel("storage (MB, packed, log scale)")
    ax2.set_ylabel("mean Acc (%)")
    ax2.grid(alpha=0.3)
    ax2.set_title("Accuracy vs storage (Table 4)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# ----------------------------------------------------------------------------- report


def pct(v: float | None) -> str:
    """A fraction as a percentage with one decimal; "–" for an undefined metric."""
    return "–" if v is None else f"{100 * v:.1f}"


def _table(rows: dict, keys: list[str], sets: list[str], seen: str | None) -> str:
    head = "| Row | " + " | ".join(f"{s}{' (seen)' if s == seen else ''} Acc | AP" for s in sets) + " | mean Acc | AP |"
    sep = "|---|" + "---:|---:|" * (len(sets) + 1)
    lines = [head, sep]
    for k in keys:
        if k not in rows:
            continue
        r = rows[k]
        cells = [f"{pct(r['test'][s]['acc'])} | {pct(r['test'][s]['ap'])}" for s in sets]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | **{pct(r['mean']['acc'])}** | **{pct(r['mean']['ap'])}** |")
    return "\n".join(lines)


def _cost_table(rows: dict, keys: list[str], size: int) -> str:
    s = str(size)
    lines = [f"| Row | bits | OPs @224² (M) | OPs ratio | OPs @{size}² (M) | storage (kB, packed) | storage ratio | "
             "QMDD-formula storage (kB) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for k in keys:
        if k not in rows:
            continue
        c, ct = rows[k]["cost"]["224"], rows[k]["cost"][s]
        lines.append(f"| {rows[k]['label']} | {', '.join(c['bits'])} | {c['ops'] / 1e6:.1f} | {c['ops_ratio']:.2f}× | "
                     f"{ct['ops'] / 1e6:.2f} | {c['storage_bytes'] / 1e3:.1f} | {c['storage_ratio']:.2f}× | "
                     f"{c['paper_storage_bytes'] / 1e3:.1f} |")
    return "\n".join(lines)


def targets(result: dict) -> dict[str, Any]:
    """The brief's targets, checked on the measured numbers (reported, never asserted)."""
    rows, seen = result["rows"], result.get("seen")
    out: dict[str, Any] = {}
    ours, fpn = rows.get("ours_w2a2"), rows.get("fp_npr")
    if ours and fpn and seen:
        d = ours["test"][seen]["ap"] - fpn["test"][seen]["ap"]
        out["seen_ap_within_1pt_of_fp_npr"] = {"ours": ours["test"][seen]["ap"], "fp_npr": fpn["test"][seen]["ap"],
                                               "delta_pts": 100 * d, "met": bool(d >= -0.01)}
    for other in ("n2uq_w2a2_rgb", "lsq_w4a4"):
        if ours and other in rows:
            out[f"mean_acc_ge_{other}"] = {"ours": ours["mean"]["acc"], other: rows[other]["mean"]["acc"],
                                           "met": bool(ours["mean"]["acc"] >= rows[other]["mean"]["acc"])}
    if ours:
        r = ours["cost"]["224"]["storage_ratio"]
        out["storage_12x_below_fp32"] = {"ratio": r, "met": bool(r >= 12.0)}
        out["qat_minutes_le_20"] = {"minutes": ours["train_wall_seconds"] / 60,
                                    "met": bool(ours["train_wall_seconds"] <= 20 * 60)}
    return out


def _why_notes(result: dict) -> list[str]:
    """One line per Fig. 9 step: its gain, and where to look when it does not help."""
    rows = result["rows"]
    notes = []
    names = {"n2uq_w2a2_npr": "NPR", "n2uq_w2a2_npr_cqb": "CQB", "ours_w2a2": "SLR"}
    fig9 = result["fig9"]
    for prev, cur in zip(fig9, fig9[1:], strict=False):
        if prev not in rows or cur not in rows:
            continue
        da = 100 * (rows[cur]["mean"]["acc"] - rows[prev]["mean"]["acc"])
        dp = 100 * ((rows[cur]["mean"]["ap"] or 0) - (rows[prev]["mean"]["ap"] or 0))
        line = f"- **+{names[cur]}**: mean Acc {da:+.1f} pts, mean AP {dp:+.1f} pts"
        if 0 < da and 0 < dp:
            pass
        elif da > 0 or dp > 0:
            line += " — mixed (one metric up, one down)."
        else:
            if cur == "ours_w2a2":
                act = result.get("activations", {})
                hs = [(n, v["raw"]["entropy_bits"], v["log"]["entropy_bits"]) for n, v in act.items()]
                if hs:
                    z = np.mean([v["frac_zero"] for v in act.values()])
                    gain = float(np.mean([b - a for _, a, b in hs]))
                    mx = float(np.mean([v["max"] for v in act.values()]))
                    off = float(np.mean([v["offset"] for v in act.values()]))
                    line += (" — did not help here. Code use of a 2-bit grid (entropy, max 2 b) raw → log: "
                             + ", ".join(f"{n} {a:.2f}→{b:.2f}" for n, a, b in hs)
                             + f" (mean gain {gain:+.2f} b; qmdd-activations.png). {100 * z:.0f} % of these "
                             "activations are exact zeros (ReLU), which no monotone map can spread"
                             + (f"; with max|X| ≈ {mx:.2f} and off ≈ {off:.2f} the slope of ln(x + off) changes "
                                f"only {(mx + off) / off:.1f}× over the range, so the log redistributes little"
                                if (mx + off) / off < 3 else "")
                             + ".")
            elif cur == "n2uq_w2a2_npr_cqb":
                a = rows[cur].get("cqb_alpha")
                if a:
                    line += (f" — did not help here. Learned α: mean {a['mean']:.3f} (min {a['min']:.3f}, max "
                             f"{a['max']:.3f}); α near its init means the FP shortcut's share barely moved in "
                             f"{result['config']['epochs']} QAT epochs.")
            else:
                line += " — did not help here."
        notes.append(line)
    return notes


def to_markdown(result: dict, arch: str) -> str:
    """The study's Markdown report (OUT/qmdd-ablation.md) from its JSON; `arch` names the architecture of every row."""
    rows, sets, seen, c = result["rows"], result["sets"], result.get("seen"), result["config"]
    size = result["size"]
    lines = [
        "# QMDD study on " + result["data_name"],
        "",
        f"Reproduces QMDD (IJCAI 2025) §4.6 Fig. 9, Table 2 (lower half), Table 4 and Fig. 7 with `{arch}` on "
        f"{result['data_name']} at {size}×{size}. Generated by:",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        f"- Data: `{c['data']}` — train {result['n_train']} / val {result['n_val']} images; test sets: "
        + ", ".join(f"{s} ({result['n_test'][s]})" for s in sets) + (f"; seen generator: **{seen}**." if seen else "."),
        f"- FP models: {arch} with RGB / NPR input, {c['fp_epochs']} epochs, Adam lr {c['fp_lr']}, batch "
        f"{c['batch_size']}, seed {c['seed']}" + (" (given: " + ", ".join(
            f"{k}={v}" for k, v in (("--fp-npr", c.get("fp_npr")), ("--fp-rgb", c.get("fp_rgb"))) if v) + ")"
            if c.get("fp_npr") or c.get("fp_rgb") else "") + ".",
        f"- QAT (every row the same): from the FP model with the same input; {c['epochs']} epochs, Adam lr {c['lr']} "
        f"with {c['lr_schedule']} decay, quantizer parameters at lr × {c['quant_lr_scale']} (N2UQ recipe), "
        f"calibration/init on {c['calib']} training images, "
        + (f"logit KD from the FP teacher (weight {c['kd_weight']})" if c["teacher_kd"] else "no KD (BCE only)")
        + f", seed {c['seed']}; stem conv and classifier at 8 bits, BN in FP; every parameter's gradient capped at "
        f"L2 norm {c['grad_clip']} per tensor, non-finite gradients zeroed (W1A1 needs it to stay finite; how often "
        "it acted per row: 'guard' in the wall-time table). Best epoch on val.",
        "- Acc at threshold 0.5 (the field's convention), AP threshold-free; both in %. Mean = over the test sets.",
        f"- Total wall time: **{result['wall_seconds'] / 60:.1f} min** on {result['machine']}"
        f" (torch threads: {result['threads']}); rows reused from the cache: {result['cached_rows'] or 'none'}.",
    ]
    if c.get("quick"):
        lines += ["", "> **--quick smoke run**: a few steps on a few images — the numbers mean nothing."]
    lines += ["", "## Fig. 9 — component ablation (W2A2)", "",
              "![Fig. 9](qmdd-ablation-fig9.png)", "", _table(rows, result["fig9"], sets, seen), ""]
    lines += _why_notes(result)
    lines += ["", "## Table 2 (lower half) — quantizers", "", "![Table 2](qmdd-ablation-table2.png)", "",
              _table(rows, result["table2"], sets, seen), "",
              "MinMax/LSQ/N2UQ/binary quantize the NPR detector (NPR input), as \"ours\" does. Binary = W1A1 with "
              "ReActNet's RSign (learnable per-channel thresholds) and sign(W)·mean|W| weights (no RPReLU).", ""]
    lines += ["## Table 4 — efficiency", "", _cost_table(rows, result["table2"] + [k for k in result["fig9"] if k not in result["table2"]], size), "",
              "OPs = FLOPs of FP layers + BOPs/64 (QMDD); ratio = FP MACs / OPs. Storage = the packed tensors the "
              ".fakelite stores (codes, scales, BN statistics); ratio vs the FP32 state dict.", ""]
    tg = result.get("targets", {})
    if tg:
        lines += ["## Targets (measured, not asserted)", ""]
        for k, v in tg.items():
            detail = ", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items() if a != "met")
            lines.append(f"- {'✔' if v['met'] else '✘'} {k}: {detail}")
        lines.append("")
    act = result.get("activations")
    if act:
        lines += ["## Fig. 7 — post-ReLU activations, raw vs ln(x + off)", "", "![Fig. 7](qmdd-activations.png)", "",
                  "Inputs of a few convs of the FP NPR model on validation images. Code shares: fraction of values "
                  "falling in each code of a 2-bit grid with equal intervals over [min, P99.9] (N2UQ's init); H = "
                  "entropy of that code distribution in bits (2 = every code equally used).", "",
                  "| layer | max | share = 0 | share < 0.1·max | off | raw code shares (%) | H raw | log code shares (%) "
                  "| H log |",
                  "|---|---:|---:|---:|---:|---|---:|---|---:|"]
        for n, v in act.items():
            lines.append(f"| {n} | {v['max']:.2f} | {100 * v['frac_zero']:.1f} % | {100 * v['frac_below_0.1max']:.1f} % | "
                         f"{v['offset']:.3f} ({v['offset_from']}) | "
                         + "/".join(f"{100 * s:.0f}" for s in v["raw"]["code_shares"]) + f" | {v['raw']['entropy_bits']:.2f} | "
                         + "/".join(f"{100 * s:.0f}" for s in v["log"]["code_shares"]) + f" | {v['log']['entropy_bits']:.2f} |")
        lines.append("")
    if result.get("cqb_study"):
        lines += ["## CQB α initialisation (W2A2, NPR + CQB + SLR)", "", _table(rows, result["cqb_study"], sets, seen), "",
                  "| Row | learned α mean (min–max) |", "|---|---|"]
        for k in result["cqb_study"]:
            if k in rows and rows[k].get("cqb_alpha"):
                a = rows[k]["cqb_alpha"]
                lines.append(f"| {rows[k]['label']} | {a['mean']:.3f} ({a['min']:.3f}–{a['max']:.3f}) |")
        lines.append("")
    if result.get("deployable_w2a2"):
        lines += ["## Deployable W2A2 vs QMDD W2A2 (accuracy; speed in docs/results/speed.md)", "",
                  _table(rows, result["deployable_w2a2"], sets, seen), "",
                  "The deployable row is uniform LSQ on the NPR input with no CQB: its integer graph is the W4A4 graph's "
                  "(a QLinearConv chain, no float work beside the convs), QMDD's keeps a float shortcut and SLR "
                  "threshold comparisons beside every conv — see docs/deploy.md, \"Speed\".", ""]
    lines += ["## Per-row wall time", "",
              "| Row | train (s) | s/epoch | eval (s) | best epoch | guard: clipped / non-finite grads | cached |",
              "|---|---:|---:|---:|---:|---|---|"]
    for k in result["row_order"]:
        r = rows[k]
        eps = r.get("epoch_seconds") or []
        g = r.get("grad_guard")
        guard = f"{g['clipped']} / {g['nonfinite']} of {g['grads_seen']}" if g else "–"
        lines.append(f"| {r['label']} | {r['train_wall_seconds']:.0f} | {np.mean(eps) if eps else 0:.0f} | "
                     f"{r['eval_seconds']:.0f} | {r.get('best_epoch') or '–'} | {guard} | "
                     f"{'yes' if r.get('cached') else 'no'} |")
    return "\n".join(lines) + "\n"
