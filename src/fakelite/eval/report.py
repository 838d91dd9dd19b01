"""Tables for the terminal and for docs (Markdown), shaped like QMDD's Table 2."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def eval_table(result: dict, title: str = "") -> Table:
    """Rows: sets + mean; columns: Acc AP AUC EER real/fake Acc, [Acc at the threshold], [TPR at the target FPR,
    FPR/TPR at the threshold, ECE], n, skipped, and "not read" (every file under the set not scored, by reason,
    e.g. "2 unsupported type") when the result carries it (all rates in %)."""
    thr = result.get("threshold", 0.5)
    show_thr = thr != 0.5
    show_nr = any(m.get("not_read") for m in result["sets"].values())
    t = Table(title=title or None)
    # operating-point columns (docs/scoring.md) when the result has them
    op = [k for k in ("tpr_at_fpr", "fpr_at_threshold", "tpr_at_threshold", "ece") if k in result["mean"]]
    fpr = result.get("target_fpr", 0.05)
    op_names = {"tpr_at_fpr": f"TPR@{100 * fpr:g}%FPR", "fpr_at_threshold": "FPR@thr", "tpr_at_threshold": "TPR@thr",
                "ece": "ECE"}
    for c in (["set", "Acc", "AP", "AUC", "EER", "real Acc", "fake Acc"] + ([f"Acc@{thr:.3f}"] if show_thr else [])
              + [op_names[k] for k in op] + ["n", "skipped"] + (["not read"] if show_nr else [])):
        t.add_column(c, justify="left" if c in ("set", "not read") else "right")
    rows = list(result["sets"].items()) + [("mean", result["mean"])]
    for name, m in rows:
        cells = [name, pct(m["acc"]), pct(m["ap"]), pct(m["auc"]), pct(m["eer"]), pct(m["real_acc"]), pct(m["fake_acc"])]
        if show_thr:
            cells.append(pct(m.get("acc_at_threshold")))
        cells += [pct(m.get(k)) for k in op]
        cells += [str(m["n"]), str(m["skipped"])]
        if show_nr:
            nr = m.get("not_read") or {}
            cells.append(", ".join(f"{v} {k}" for k, v in sorted(nr.items(), key=lambda kv: (-kv[1], kv[0]))) or "0")
        t.add_row(*cells, style="bold" if name == "mean" else None)
    return t


def wide_console() -> Console:
    """A console that does not squeeze tables to 80 columns when output goes to a file or a pipe."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


def print_eval(result: dict, title: str = "", console: Console | None = None) -> None:
    (console or wide_console()).print(eval_table(result, title))


def table2_markdown(rows: dict[str, dict], sets: list[str] | None = None) -> str:
    """QMDD Table-2 shape: one row per method, Acc/AP per set and Avg. (`rows`: method → eval result)."""
    first = next(iter(rows.values()))
    sets = sets or list(first["sets"])
    head = "| Method | " + " | ".join(f"{s} Acc | {s} AP" for s in sets) + " | Avg. Acc | Avg. AP |"
    sep = "|---|" + "---|" * (2 * len(sets) + 2)
    lines = [head, sep]
    for method, r in rows.items():
        cells = []
        for s in sets:
            m = r["sets"].get(s, {})
            cells += [pct(m.get("acc")), pct(m.get("ap"))]
        cells += [pct(r["mean"]["acc"]), pct(r["mean"]["ap"])]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def eval_markdown(result: dict) -> str:
    lines = ["| set | Acc | AP | AUC | EER | real Acc | fake Acc | n |", "|---|---|---|---|---|---|---|---|"]
    for name, m in list(result["sets"].items()) + [("**mean**", result["mean"])]:
        lines.append(f"| {name} | {pct(m['acc'])} | {pct(m['ap'])} | {pct(m['auc'])} | {pct(m['eer'])} | "
                     f"{pct(m['real_acc'])} | {pct(m['fake_acc'])} | {m['n']} |")
    return "\n".join(lines)
