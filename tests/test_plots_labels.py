"""Figures say what they show: whole-epoch ticks on a one-epoch run; ROC/PR and confusion figures name the model,
the data it was trained on and the data evaluated."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from fakelite.cli import app  # noqa: E402
from fakelite.eval.plots import epoch_axis  # noqa: E402


def test_one_epoch_has_one_whole_tick():
    fig, ax = plt.subplots()
    ax.plot([1], [0.5], "o")
    epoch_axis(ax, [1])
    fig.canvas.draw()
    assert list(ax.get_xticks()) == [1]
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.plot(range(1, 51), [0.5] * 50)
    epoch_axis(ax, list(range(1, 51)))
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)


def test_eval_figures_name_model_and_data(tiny_fp_model, tiny_data, tmp_path):
    _, model_path = tiny_fp_model
    plots = tmp_path / "plots"
    r = CliRunner().invoke(app, ["eval", "--model", str(model_path), "--data", str(tiny_data / "test"), "--plots",
                                 str(plots), "--quiet"])
    assert r.exit_code == 0, r.output
    for png in ("roc_pr.png", "confusion_gen_a.png"):
        title = Image.open(plots / png).text.get("Title", "")
        assert model_path.name in title and f"trained on {tiny_data}" in title and str(tiny_data / "test") in title
