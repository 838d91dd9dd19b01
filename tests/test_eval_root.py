"""A dataset root holding train/ is evaluated on its test/ only, or refused: training images never enter a mean."""

import json
import shutil

from typer.testing import CliRunner

from fakelite.cli import app
from fakelite.eval.robustness import resolve_data
from fakelite.eval.roots import MixedSplitsError, eval_root

runner = CliRunner()


def test_eval_of_a_dataset_root_scores_test_only(tiny_fp_model, tiny_data, tmp_path):
    _, model_path = tiny_fp_model
    j = tmp_path / "e.json"
    r = runner.invoke(app, ["eval", "--model", str(model_path), "--data", str(tiny_data), "--json", str(j), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads(j.read_text())
    assert set(res["sets"]) == {"gen_a", "gen_b"}  # not train, val
    assert res["mean"]["n"] == 32 and res["root"] == str(tiny_data / "test")
    assert "evaluating" in r.output and "test" in r.output


def test_eval_of_a_root_with_train_but_no_test_is_refused(tiny_fp_model, tiny_data, tmp_path):
    _, model_path = tiny_fp_model
    root = tmp_path / "root"
    shutil.copytree(tiny_data / "train", root / "train")
    shutil.copytree(tiny_data / "val", root / "val")
    r = runner.invoke(app, ["eval", "--model", str(model_path), "--data", str(root), "--quiet"])
    assert r.exit_code == 2
    assert "no test/" in r.output and "Traceback" not in r.output
    try:
        resolve_data(root)
    except MixedSplitsError:
        pass
    else:
        raise AssertionError("robustness would score training data")


def test_plain_folders_are_scored_as_given(tiny_data):
    assert eval_root(tiny_data / "test") == (tiny_data / "test", None)
    assert eval_root(tiny_data / "test" / "gen_a") == (tiny_data / "test" / "gen_a", None)


def test_a_class_named_train_is_not_a_training_split(tmp_path):
    # ForenSynths test/progan holds LSUN classes, one of them called "train"
    for cls in ("airplane", "train"):
        for lab in ("0_real", "1_fake"):
            (tmp_path / "progan" / cls / lab).mkdir(parents=True)
    assert eval_root(tmp_path / "progan") == (tmp_path / "progan", None)
