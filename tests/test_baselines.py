"""Classical baselines: features carry the NPR trace, and SVM/tree/forest report train and test accuracy."""

from __future__ import annotations

import json

import numpy as np
import torch

from fakelite.models.classical import FEATURE_GROUPS, feature_names, image_features, npr_features
from fakelite.studies.baselines import run_baselines


def test_npr_features_on_known_images():
    # a nearest-upsampled image has NPR exactly 0 everywhere
    small = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    up = small.repeat(2, 0).repeat(2, 1)
    f = npr_features(up)
    assert np.allclose(f[:12], 0)
    # a horizontal ramp: NPR at column offset 1 is one step (1/255), zero at row offset 1
    ramp = np.tile(np.arange(16, dtype=np.uint8)[None, :, None], (16, 1, 3))
    f = npr_features(ramp)
    assert np.allclose(f[0:3], 1 / 255) and np.allclose(f[3:6], 0) and np.allclose(f[6:9], 1 / 255)
    v = image_features(ramp)
    assert v.shape == (sum(FEATURE_GROUPS.values()),) == (len(feature_names()),)
    assert np.isfinite(v).all()


def test_baselines_on_tiny_data(tiny_data, tmp_path):
    res = run_baselines(tiny_data, crop=32)
    assert set(res["methods"]) == {"SVM (RBF)", "Decision tree", "Random forest"}
    for r in res["methods"].values():
        assert 0 <= r["train_acc"] <= 1
        assert set(r["sets"]) == {"gen_a", "gen_b"}
        for m in (*r["sets"].values(), r["mean"]):
            assert 0 <= m["acc"] <= 1 and m["auc"] is not None and m["ap"] is not None
    # the tiny fakes are exact ×2 nearest up-samplings: NPR features separate them perfectly
    assert res["methods"]["Random forest"]["mean"]["acc"] == 1.0
    assert res["methods"]["Decision tree"]["train_acc"] == 1.0


def test_baseline_cli_with_cnn(tiny_data, tmp_path):
    import typer
    from typer.testing import CliRunner

    from fakelite import artifact
    from fakelite.commands.compress import baseline_command
    from fakelite.models import create_model

    torch.manual_seed(0)
    cnn = artifact.save(create_model("mobilenetv3_small"), tmp_path / "m" / "model.fakelite")
    app = typer.Typer()
    app.command()(baseline_command)
    out = tmp_path / "b.json"
    r = CliRunner().invoke(app, ["--data", str(tiny_data), "--crop", "32", "--cnn", str(cnn), "--json", str(out),
                                 "--markdown", str(tmp_path / "b.md")])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    cnn_rows = [v for v in res["methods"].values() if v["kind"] == "cnn"]
    assert len(cnn_rows) == 1 and cnn_rows[0]["train_acc"] is not None
    assert "Random forest" in (tmp_path / "b.md").read_text()
    r = CliRunner().invoke(app, ["--data", str(tmp_path / "nope")])
    assert r.exit_code != 0 and "nope" in r.output
