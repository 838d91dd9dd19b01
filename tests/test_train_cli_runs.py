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
