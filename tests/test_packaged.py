"""Packaged models: `default`, `default-w4a4`, `default-w2a2` resolve to fakelite/weights/<name>.fakelite (or
$FAKELITE_WEIGHTS_DIR) in the API and every command; a missing one is one clear line."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import fakelite
from fakelite.artifact import ArtifactError
from fakelite.cli import app
from fakelite.deploy.runtime import Detector
from fakelite.packaged import PACKAGED, WEIGHTS_ENV, packaged_models, packaged_path, resolve_model

runner = CliRunner()


@pytest.fixture()
def weights(tmp_path, monkeypatch):
    """A weights folder holding only `default` (a random npr_resnet23 at crop 32, with a description)."""
    d = tmp_path / "weights"
    d.mkdir()
    torch.manual_seed(0)
    m = fakelite.create_model("npr_resnet23")
    m.preprocess = m.preprocess.with_scoring(policy="tiles")
    m.preprocess = type(m.preprocess).from_dict({**m.preprocess.to_dict(), "crop": 32})
    m.threshold_source = {"method": "target_fpr", "target_fpr": 0.05, "data": "val/0_real", "n_real": 40,
                          "policy": "tiles"}
    fakelite.save(m, d / "default.fakelite", threshold=0.7,
                  provenance={"description": "test model: random weights"})
    monkeypatch.setenv(WEIGHTS_ENV, str(d))
    return d


def test_names_resolve_in_the_api(weights):
    assert resolve_model("default") == weights / "default.fakelite"
    assert resolve_model("some/model.onnx").as_posix() == "some/model.onnx"  # paths pass through
    m = fakelite.load("default")
    assert m.threshold == 0.7 and m.preprocess.policy == "tiles"
    det = Detector.load("default")
    s = det.predict(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).score
    assert np.isfinite(s) and det.path == weights / "default.fakelite"
    with pytest.raises(ArtifactError, match=r"packaged model 'default-w2a2' is not installed \(expected .*weights"):
        fakelite.load("default-w2a2")
    with pytest.raises(ArtifactError, match="not installed"):
        Detector.load("default-w4a4")


def test_names_resolve_in_the_commands(weights, tiny_data, tmp_path):
    img_dir = tiny_data / "test" / "gen_a" / "0_real"
    j = tmp_path / "d.json"
    r = runner.invoke(app, ["detect", str(img_dir), "--faces", "off", "--json", str(j)])  # no --model: default
    assert r.exit_code == 0, r.output
    assert len(json.loads(j.read_text())["results"]) == 8
    r = runner.invoke(app, ["eval", "--data", str(tiny_data / "test"), "--quiet", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["policy"] == "tiles"
    r = runner.invoke(app, ["export", "--model", "default", "--out", str(tmp_path / "d.onnx"), "--check", "0"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["bench", "--model", "default", "--runs", "2", "--policy", "tiles", "--image-size", "96",
                            "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["image"]["crops"] == 9 and b["image"]["policy"] == "tiles"
    r = runner.invoke(app, ["detect", str(img_dir), "--model", "default-w4a4"])
    assert r.exit_code == 2 and "packaged model 'default-w4a4' is not installed" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_models_lists_architectures_and_packaged_models(weights):
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.strip().startswith("default "))
    assert "npr_resnet23" in line and "FP32" in line and "threshold 0.7000" in line and "test model" in line
    assert "policy tiles" in line and "FPR 5 %" in line
    assert any(x.strip().startswith("default-w2a2") and "not installed" in x for x in r.output.splitlines())
    assert any(x.strip().startswith("npr_resnet23") for x in r.output.splitlines())
    rows = {r["name"]: r for r in packaged_models()}
    assert rows["default"]["installed"] and not rows["default-w4a4"]["installed"]


def test_serve_settings_validate_the_policy():
    from fakelite.serve.settings import ServeSettings

    assert ServeSettings(policy="tiles", aggregate="max").validate().policy == "tiles"
    with pytest.raises(ValueError, match="scoring policy"):
        ServeSettings(policy="mosaic").validate()


@pytest.mark.parametrize("name", PACKAGED)
def test_shipped_model_loads_and_predicts(name, monkeypatch):
    """Live once the weights are installed in fakelite/weights/: each shipped model scores a 256² image."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    path = packaged_path(name)
    if not path.is_file():
        pytest.skip(f"{path} not installed yet")
    det = Detector.load(name)
    p = det.predict(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    assert np.isfinite(p.score) and 0.0 <= p.score <= 1.0 and np.isfinite(p.logit)
    assert fakelite.load(name).threshold == det.threshold
