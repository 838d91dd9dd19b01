"""The MobileNetV3 recipe end to end on tiny data: every step is measured and the final artifact is int8."""

from __future__ import annotations

import json

from fakelite import artifact


def test_recipe_cli_end_to_end(tiny_data, tmp_path):
    import typer
    from typer.testing import CliRunner

    from fakelite.commands.compress import recipe_command

    app = typer.Typer()
    app.command()(recipe_command)
    out = tmp_path / "mbv3"
    r = CliRunner().invoke(app, ["mobilenetv3", "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
                                 "--max-steps", "2", "--batch-size", "8", "--threads", "1", "--latency-runs", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "mobilenetv3.json").read_text())
    steps = [row["step"] for row in res["rows"]]
    assert steps[0].startswith("teacher") and any("(npr)" in s for s in steps) and any("(rgb)" in s for s in steps)
    assert res["chosen_input"] in ("npr", "rgb")
    rows = {row["step"]: row for row in res["rows"]}
    student = rows[f"distilled MobileNetV3-S ({res['chosen_input']})"]
    pruned = rows["pruned + fine-tuned"]
    int8 = rows["int8 PTQ (W8A8 MinMax)"]
    w4 = rows["W4A4 LSQ QAT"]
    assert pruned["params"] < 0.75 * student["params"] and pruned["macs"] < 0.75 * student["macs"]
    assert int8["packed_bytes"] < 0.4 * pruned["packed_bytes"]
    assert w4["packed_bytes"] < int8["packed_bytes"]
    for row in res["rows"]:
        assert 0 <= row["train_acc"] <= 1 and set(row["test"]) >= {"acc", "ap", "auc"} and row["latency_ms"] > 0
    final = artifact.load(out / "model.fakelite")
    assert final.header["quant"]["config"]["w_bits"] == 8 and final.header["arch"]["pruned"]
    assert "| step |" in (out / "mobilenetv3.md").read_text()
    r = CliRunner().invoke(app, ["nosuch", "--data", str(tiny_data), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "mobilenetv3" in r.output
