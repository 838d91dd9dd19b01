"""`fakelite train`: --resume without a checkpoint is refused (unless --fresh); a finished run keeps no
checkpoint unless --keep-checkpoint."""

from typer.testing import CliRunner

from fakelite.cli import app

runner = CliRunner()


def _train(data, out, *extra):
    return runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--max-steps", "1",
                               "--batch-size", "8", "--quiet", *extra])


def test_resume_without_checkpoint_is_refused(tiny_data, tmp_path):
    out = tmp_path / "typo"
    r = _train(tiny_data, out, "--resume")
    assert r.exit_code == 2 and "no checkpoint.safetensors to resume from" in r.output and "--fresh" in r.output
    assert not (out / "model.fakelite").exists()
    r = _train(tiny_data, out, "--resume", "--fresh")
    assert r.exit_code == 0, r.output
    assert "starting from epoch 0" in r.output and (out / "model.fakelite").exists()


def test_finished_run_removes_its_checkpoint_unless_kept(tiny_data, tmp_path):
    r = _train(tiny_data, tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "model.fakelite").exists() and not (tmp_path / "a" / "checkpoint.safetensors").exists()
    r = _train(tiny_data, tmp_path / "b", "--keep-checkpoint")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b" / "checkpoint.safetensors").exists()


def test_architecture_default_recipe_is_used_unless_overridden(tiny_data, tmp_path):
    import json

    from fakelite.models import get_entry

    assert get_entry("mobilenetv3_small").training["lr"] == 1e-3 and get_entry("npr_resnet23").training["lr"] == 2e-4
    for extra, want in (([], 1e-3), (["--lr", "5e-4"], 5e-4)):
        out = tmp_path / f"mbv3{len(extra)}"
        r = _train(tiny_data, out, "--model", "mobilenetv3_small", *extra)
        assert r.exit_code == 0, r.output
        assert json.loads((out / "metrics.json").read_text())["config"]["lr"] == want
    models = runner.invoke(app, ["models"]).output
    assert "train: lr 0.001" in models and "train: lr 0.0002" in models
