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


def test_real_media_stage_scores_every_family_and_policy_with_the_packaged_models(tmp_path):
    """The demo's real-media stage (skipped by --quick): a test-only WildSynth sample built with the shipped
    generators, the three packaged models under every policy, all eight families."""
    from fakelite.data.synth.source import FaceSynthError
    from fakelite.data.wild.build import FAMILIES
    from fakelite.eval.policy_tables import POLICY_VARIANTS
    from fakelite.pipelines.demo import _real_media_tables

    warnings: list[str] = []
    try:
        _real_media_tables(tmp_path, 2, True, True, lambda m: None, lambda m: None,
                           lambda m, c: warnings.append(m))
    except FaceSynthError as e:  # pragma: no cover - offline without the CelebA wheel
        pytest.skip(str(e))
    if warnings and "CelebA" in warnings[0]:
        pytest.skip(warnings[0])
    assert not warnings, warnings
    d = json.loads((tmp_path / "wild_tables.json").read_text())
    assert set(d["summary"]) == {"default", "default-w4a4", "default-w2a2"}
    for per_policy in d["summary"].values():
        assert set(per_policy) == set(POLICY_VARIANTS)
        assert set(per_policy["tiles-mean"]) == {*FAMILIES, "mean"}
        assert per_policy["tiles-mean"]["gan"]["n"] == 4  # 2 units: 2 reals + 2 fakes
        assert "fpr_at_threshold" in per_policy["tiles-mean"]["mean"]  # the shipped policy carries the threshold
