"""`fakelite train` / `fakelite eval` from the command line: outputs, JSON shapes (DESIGN.md §3), errors."""

import json

from typer.testing import CliRunner

import fakelite
from fakelite.cli import app
from fakelite.eval.metrics import METRIC_KEYS

runner = CliRunner()


def test_train_writes_artifact_metrics_and_curves(tiny_data, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "--model", "npr_resnet23", "--out", str(out),
                            "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (out / "model.fakelite").exists() and (out / "curves.png").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and 0 < metrics["threshold"] < 1
    assert {"val", "val_at_threshold", "wall_seconds", "best_epoch"} <= set(metrics)
    m = fakelite.load(out / "model.fakelite")
    assert m.preprocess.crop == 32  # capped by the data's image size, no resize
    assert m.threshold == metrics["threshold"] and m.provenance["epochs"] == 2
    # --target-fpr 0.05 (default): chosen on val/0_real, and the artifact says so (docs/scoring.md)
    assert m.threshold_source["method"] == "target_fpr" and m.threshold_source["n_real"] == 8
    assert metrics["threshold_source"] == m.threshold_source and 0 < metrics["threshold_youden"] < 1


def test_eval_json_shape(tiny_fp_model, tiny_data, tmp_path):
    _, model_path = tiny_fp_model
    j = tmp_path / "e.json"
    r = runner.invoke(app, ["eval", "--model", str(model_path), "--data", str(tiny_data / "test"), "--json", str(j),
                            "--plots", str(tmp_path / "plots"), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads(j.read_text())
    assert set(res["sets"]) == {"gen_a", "gen_b"}
    for m in [*res["sets"].values(), res["mean"]]:
        assert set(METRIC_KEYS) <= set(m)
        for k in ("acc", "real_acc", "fake_acc", "ap", "auc", "eer"):
            assert 0.0 <= m[k] <= 1.0
    assert res["mean"]["n"] == 32
    assert (tmp_path / "plots" / "roc_pr.png").exists()


def test_eval_skips_bad_files_and_counts_them(tiny_fp_model, tiny_data, tmp_path):
    import shutil

    _, model_path = tiny_fp_model
    root = tmp_path / "set"
    shutil.copytree(tiny_data / "test" / "gen_a", root)
    (root / "1_fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "0_real" / "empty.jpg").write_bytes(b"")
    j = tmp_path / "e.json"
    r = runner.invoke(app, ["eval", "--model", str(model_path), "--data", str(root), "--json", str(j), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads(j.read_text())
    (only,) = res["sets"].values()
    assert only["n"] == 16 and only["skipped"] == 2
    assert any("broken.png" in k for k in only["skipped_files"])


def test_clear_errors(tmp_path):
    r = runner.invoke(app, ["eval", "--model", str(tmp_path / "none.fakelite"), "--data", str(tmp_path)])
    assert r.exit_code == 2 and "no such model file" in r.output
    r = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "missing 'train' folder" in r.output
