"""`fakelite demo --quick` end to end on a quick FaceSynth build: both quantized models exported, checked, timed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fakelite.cli import app


def test_quick_demo_exports_and_times_both_integer_models(facesynth_quick, tmp_path):
    if facesynth_quick is None:
        pytest.skip("FaceSynth quick build unavailable here (no CelebA wheel cached and no index)")
    out = tmp_path / "demo"
    out.mkdir()
    (out / "data").symlink_to(facesynth_quick, target_is_directory=True)
    r = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--quiet", "--threads", "1"])
    assert r.exit_code == 0, r.output
    speed = json.loads((out / "export" / "speed.json").read_text())
    assert set(speed["parity"]) == {"w2a2", "w4a4"}
    w2, w4 = speed["parity"]["w2a2"], speed["parity"]["w4a4"]
    assert w4["n"] > 0 and w4["same_decisions"] == w4["n"]
    assert w2["n"] > 0 and w2["same_decisions"] >= w2["n"] - 2  # SLR ties at float noise (docs/deploy.md, Parity)
    assert set(speed["bench"]) == {"FP32 torch", "FP32 onnx", "W2A2 integer ONNX", "W4A4 integer ONNX"}
    for name in ("w2a2", "w4a4"):
        assert (out / "export" / f"model_{name}_int.onnx").stat().st_size > 0
        assert json.loads((out / name / "eval.json").read_text())["mean"]["auc"] is not None
    assert "W4A4 integer ONNX" in r.output
