"""DeFakeQ calibration: SupCon against a hand-computed value; the pipeline and `fakelite compare --quick` on
tiny_data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fakelite.quant.defakeq import supcon_loss


def test_supcon_hand_computed_four_samples():
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]])
    y = torch.tensor([0, 0, 1, 1])
    # τ = 0.5: similarities / τ: s01 = 1.2, s02 = 0, s03 = −1.2, s12 = 1.6, s13 = 0.56, s23 = 1.6
    a0 = -(1.2 - math.log(math.exp(1.2) + math.exp(0) + math.exp(-1.2)))
    a1 = -(1.2 - math.log(math.exp(1.2) + math.exp(1.6) + math.exp(0.56)))
    a2 = -(1.6 - math.log(math.exp(0) + math.exp(1.6) + math.exp(1.6)))
    a3 = -(1.6 - math.log(math.exp(-1.2) + math.exp(0.56) + math.exp(1.6)))
    expected = (a0 + a1 + a2 + a3) / 4
    assert expected == pytest.approx(0.6428929, abs=1e-6)
    assert float(supcon_loss(z, y, tau=0.5)) == pytest.approx(expected, abs=1e-6)
    assert float(supcon_loss(3 * z, y, tau=0.5)) == pytest.approx(expected, abs=1e-6)  # L2-normalised
    # swapping labels so positives are far apart must raise the loss
    assert float(supcon_loss(z, torch.tensor([0, 1, 0, 1]), tau=0.5)) > expected + 0.1
    # extra views: only the first 2 rows are anchors
    assert float(supcon_loss(z, y, tau=0.5, anchors=2)) == pytest.approx((a0 + a1) / 2, abs=1e-6)


def test_run_defakeq_on_tiny_data(tiny_data, tiny_fp_model, tmp_path):
    from fakelite import artifact
    from fakelite.pipelines.defakeq import run_defakeq
    from fakelite.quant.defakeq import InfeasibleBudget

    _, fp_path = tiny_fp_model
    with pytest.raises(InfeasibleBudget, match="minimum feasible"):
        run_defakeq(fp_path, tiny_data, tmp_path / "x", budget_mb=0.01, calib=16, bits=(2, 3),
                    calibrate_student=False)
    out = tmp_path / "dq"
    m = run_defakeq(fp_path, tiny_data, out, budget_mb=0.6, calib=16, bits=(2, 3), stage_epochs=0.01,
                    final_epochs=0.01)
    assert m["cost"]["storage_bytes"] <= 600_000
    assert m["calibration"]["steps"] == 3  # two stages + the global phase, one step each
    assert 0 < m["calibration"]["trainable_params"] < 0.1 * m["cost"]["params"]
    assert m["veft"]["channels"] > 0
    q = artifact.load(out / "model.fakelite")
    assert q.header["quant"]["haq"]["allocation"] == m["allocation"]
    assert (out / "haq_allocation.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["recipe"] == "defakeq"
    assert torch.isfinite(q(torch.randn(2, 3, 32, 32))).all()


def test_compare_quick_cli(tiny_data, tiny_fp_model, tmp_path):
    import typer
    from typer.testing import CliRunner

    from fakelite.commands.compare import compare_command

    app = typer.Typer()
    app.command()(compare_command)
    _, fp_path = tiny_fp_model
    out = tmp_path / "results"
    r = CliRunner().invoke(app, ["--data", str(tiny_data), "--fp", str(fp_path), "--out", str(out), "--quick",
                                 "--calib", "16", "--per-set", "8", "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "defakeq.json").read_text())
    methods = {row["method"] for row in res["rows"]}
    assert methods == {"ptq-percentile", "haq-calib", "haq-veft-calib"}
    budget = next(row for row in res["rows"] if row["method"] == "haq-veft-calib")["budget_bytes"]
    for row in res["rows"]:
        if row["method"].startswith("haq"):
            assert row["storage_bytes"] <= budget * 1.01
        if row["method"] in ("haq-calib", "haq-veft-calib"):
            assert row["storage_bytes"] <= budget
    assert "DeFakeQ" in (out / "defakeq.md").read_text()
    assert (out / "img" / "defakeq_auc_storage.png").exists()  # charts inside the run folder by default
    import re

    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", (out / "defakeq.md").read_text()):
        assert (out / link).exists(), link
    r = CliRunner().invoke(app, ["--data", str(tmp_path / "nope"), "--fp", str(fp_path), "--out", str(out)])
    assert r.exit_code != 0 and "nope" in r.output
