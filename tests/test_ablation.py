"""`fakelite ablation --quick` end to end on tiny data: every row trained, evaluated and costed; outputs written;
a re-run reuses the cache; and `run_quantization` (the library behind `fakelite quantize`) on its own."""

from __future__ import annotations

import json

import pytest


def _cli():
    import typer

    from fakelite.commands.ablation import ablation_command

    app = typer.Typer()
    app.command("ablation")(ablation_command)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode
    return app


@pytest.fixture(scope="module")
def quick_study(tiny_data, tmp_path_factory):
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("ablation")
    out, work = root / "results", root / "work"
    args = ["ablation", "--data", str(tiny_data), "--out", str(out), "--work", str(work), "--quick", "--threads", "1",
            "--deployable-w2a2"]
    r = CliRunner().invoke(_cli(), args)
    assert r.exit_code == 0, r.output
    return out, work, args, r.output


def test_quick_study_writes_every_row(quick_study, tiny_data):
    from fakelite.studies.qmdd_ablation import FIG9, TABLE2

    out, work, _, output = quick_study
    for name in ("qmdd-ablation.md", "qmdd-ablation.json", "qmdd-ablation-fig9.png", "qmdd-ablation-table2.png",
                 "qmdd-activations.png"):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "qmdd-ablation.json").read_text())
    assert res["sets"] == ["gen_a", "gen_b"]
    assert set(FIG9 + TABLE2) <= set(res["rows"])
    for key in FIG9 + TABLE2:
        row = res["rows"][key]
        for s in res["sets"]:
            assert 0.0 <= row["test"][s]["acc"] <= 1.0 and 0.0 <= row["test"][s]["ap"] <= 1.0
            assert row["test"][s]["n"] == 16
        assert row["mean"]["acc"] == pytest.approx((row["test"]["gen_a"]["acc"] + row["test"]["gen_b"]["acc"]) / 2)
        for size in ("224", str(res["size"])):
            c = row["cost"][size]
            assert c["size"] == int(size) and c["ops"] > 0 and c["storage_bytes"] > 0
        assert (work / key / "model.fakelite").exists()
    rows = res["rows"]
    # Table-4 facts that follow from the bit widths alone
    fp = rows["fp_npr"]["cost"]["224"]
    assert fp["ops"] == fp["macs"] and fp["storage_ratio"] == pytest.approx(1.0, rel=0.02)
    assert rows["ours_w2a2"]["cost"]["224"]["storage_ratio"] > 10
    assert rows["n2uq_w2a2_npr"]["cost"]["224"]["ops"] < rows["n2uq_w3a3"]["cost"]["224"]["ops"] < \
        rows["lsq_w4a4"]["cost"]["224"]["ops"] < fp["ops"]
    assert rows["binary_w1a1"]["cost"]["224"]["bits"] == ["W1A1", "W8A8"]
    assert rows["ours_w2a2"]["quant"]["quantizer"] == "slr-n2uq" and rows["ours_w2a2"]["cqb_alpha"]["n"] > 0
    assert rows["n2uq_w2a2_rgb"]["input"] == "rgb" and rows["n2uq_w2a2_npr"]["input"] == "npr"
    assert res["activations"] and all(v["raw"]["entropy_bits"] <= 2.0 + 1e-9 for v in res["activations"].values())
    assert res["wall_seconds"] > 0 and "min" in (out / "qmdd-ablation.md").read_text()
    md = (out / "qmdd-ablation.md").read_text()
    assert "Fig. 9" in md and "Table 4" in md and "Ours W2A2" in md
    assert "[12/12]" in output
    # the deployable W2A2 row (uniform LSQ, NPR, no CQB) next to QMDD's W2A2
    assert rows["lsq_w2a2_deploy"]["quant"]["quantizer"] == "lsq" and not rows["lsq_w2a2_deploy"].get("cqb_alpha")
    assert res["deployable_w2a2"] == ["ours_w2a2", "lsq_w2a2_deploy"]
    assert "Deployable W2A2 (LSQ, NPR, no CQB)" in md


def test_rerun_reuses_cached_rows(quick_study):
    from typer.testing import CliRunner

    out, work, args, _ = quick_study
    before = (work / "ours_w2a2" / "model.fakelite").stat().st_mtime_ns
    r = CliRunner().invoke(_cli(), args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "qmdd-ablation.json").read_text())
    assert set(res["cached_rows"]) == set(res["rows"])
    assert (work / "ours_w2a2" / "model.fakelite").stat().st_mtime_ns == before


def test_ablation_rejects_bad_data(tmp_path):
    from typer.testing import CliRunner

    r = CliRunner().invoke(_cli(), ["ablation", "--data", str(tmp_path / "nope"), "--quick"])
    assert r.exit_code == 2 and "nope" in r.output


def test_run_quantization_library(tiny_data, tiny_fp_model, tmp_path):
    from fakelite import artifact
    from fakelite.pipelines.qat import run_quantization
    from fakelite.quant import QuantConfig

    _, fp_path = tiny_fp_model
    fp = artifact.load(fp_path)
    fp_state = {k: v.clone() for k, v in fp.state_dict().items()}
    student, m = run_quantization(fp, tiny_data, tmp_path / "q", QuantConfig(w_bits=2, a_bits=2, quantizer="n2uq",
                                  cqb=True), epochs=1, calib=8, batch_size=8, max_steps=2, quiet=True,
                                  freeze_cqb_alpha=True)
    assert all(v.equal(fp.state_dict()[k]) for k, v in fp_state.items())  # the FP model is untouched
    assert m["cost"]["bops"] > 0 and m["mode"] == "qat"
    assert json.loads((tmp_path / "q" / "metrics.json").read_text())["cost"] == json.loads(json.dumps(m["cost"]))
    alphas = {float(x.cqb.alpha) for x in student.modules() if getattr(x, "cqb", None) is not None}
    assert alphas and all(abs(a - 0.9) < 1e-6 for a in alphas)  # frozen at α₀
    loaded = artifact.load(tmp_path / "q" / "model.fakelite")
    assert loaded.fakelite_quant["config"]["cqb"] is True
    with pytest.raises(ValueError, match="already quantized"):
        run_quantization(loaded, tiny_data, tmp_path / "q2", QuantConfig(), epochs=1)
