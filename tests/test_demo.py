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
    from fakelite.deploy.autoselect import installed

    rows = {"FP32 torch", "FP32 onnx", "W2A2 integer ONNX", "W4A4 integer ONNX", "W2A2 QDQ onnx", "W4A4 QDQ onnx"}
    if installed("openvino"):
        rows |= {"FP32 openvino", "W2A2 QDQ openvino", "W4A4 QDQ openvino"}
    assert set(speed["bench"]) == rows
    assert set(speed["fastest"]) == {"FP32", "W4A4", "W2A2"}
    for model, f in speed["fastest"].items():  # the fastest row of each model is its smallest median
        mine = [v for k, v in speed["bench"].items() if k.startswith(model)]
        assert f["median_ms"] == min(v["latency_ms"]["median"] for v in mine)
        assert speed["bench"][f["row"]]["runtime"] == f["runtime"] and f["row"] in r.output
    ms = {k: v["median_ms"] for k, v in speed["fastest"].items()}
    assert speed["ratios"]["fastest_w4a4_speedup_vs_fastest_fp32"] == pytest.approx(ms["FP32"] / ms["W4A4"], rel=1e-2)
    assert speed["ratios"]["fastest_w2a2_latency_vs_fastest_w4a4"] == pytest.approx(ms["W2A2"] / ms["W4A4"], rel=1e-2)
    assert all(row["gmac_per_s"] > 0 for row in speed["bench"].values())
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
