"""`fakelite quantize --recipe defakeq` prints accuracy and size like plain QAT/PTQ does."""

import json

from typer.testing import CliRunner

from fakelite.cli import app


def test_recipe_prints_accuracy_and_size(tiny_fp_model, tiny_data, tmp_path):
    out = tmp_path / "dq"
    r = CliRunner().invoke(app, ["quantize", "--model", str(tiny_fp_model[1]), "--data", str(tiny_data), "--out",
                                 str(out), "--recipe", "defakeq", "--budget-mb", "0.6", "--calib", "8", "--quiet"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    line = next(ln for ln in r.output.splitlines() if ln.startswith("recipe defakeq:"))
    assert f"val acc {m['val']['acc']:.4f}" in line
    assert f"storage {m['cost']['storage_bytes'] / 1e3:.0f} kB" in line
