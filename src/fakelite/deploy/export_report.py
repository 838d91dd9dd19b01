"""The one-line op summary `fakelite export` prints, built from the graph's own op counts (no fixed list)."""

from __future__ import annotations

from collections.abc import Mapping


def op_summary(ops: Mapping[str, int]) -> str:
    """"QLinearConv×20, MatMulIntegerToFloat×9, …": every op type of the graph, most frequent first (ties by
    name), with the total node count. `ops`: {op_type: count} as `fakelite.deploy.onnx_graph.op_counts` returns."""
    items = sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"{sum(ops.values())} nodes: " + ", ".join(f"{k}×{v}" for k, v in items)
