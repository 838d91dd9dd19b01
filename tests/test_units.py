"""One size unit: decimal kB (1000 bytes), labelled, in every command's table (prune and recipe printed KiB)."""

from fakelite.pipelines.mbv3 import TABLE_COLUMNS, table_markdown


def test_recipe_table_in_decimal_kb():
    row = {"step": "s", "test": {"acc": 0.5, "ap": 0.5, "auc": 0.5}, "params": 10, "macs": 1e6,
           "packed_bytes": 479_000, "latency_ms": 1.0, "wall_seconds": 1.0}
    assert "packed kB" in TABLE_COLUMNS and not any("KiB" in c for c in TABLE_COLUMNS)
    assert "| 479 |" in table_markdown([row])  # 479,000 B = 479 kB (it was 468 KiB)
