"""The per-family × per-policy tables (fakelite.eval.policy_tables): every policy of every model on every set from
one decode, aggregation as the Detector does it, and metrics that agree with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from fakelite.data.folders import discover_sets
from fakelite.data.preprocess import Preprocess
from fakelite.eval import policy_tables as pt


class Brightness(nn.Module):
    """Logit = mean over the crop of the first normalised channel: the tile with a bright patch scores highest."""

    def __init__(self, pre: Preprocess, threshold: float = 0.5, temperature: float = 1.0) -> None:
        super().__init__()
        self.preprocess, self.threshold, self.temperature = pre, threshold, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].mean(dim=(1, 2)).unsqueeze(1)


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for fam, level in (("famA", 90), ("famB", 60)):
        for i in range(6):
            real = rng.integers(0, 60, (80, 120, 3), dtype=np.uint8)
            fake = real.copy()
            fake[: 32, : 32] = level + 10 * i  # a bright corner: seen by one tile and not by the centre crop
            _write(tmp_path / fam / "0_real" / f"{i}.png", real)
            _write(tmp_path / fam / "1_fake" / f"{i}.png", fake)
    (tmp_path / "famA" / "0_real" / "bad.png").write_bytes(b"not an image")
    return tmp_path


def test_every_policy_scores_like_the_transforms_and_metrics_match_sklearn(root: Path) -> None:
    pre = Preprocess(crop=32, npr=False, policy="tiles", aggregate="mean", mean=(0, 0, 0), std=(1, 1, 1))
    models = {"m": Brightness(pre, threshold=0.5)}
    sets = discover_sets(root)
    scores = pt.score_sets(models, sets)
    assert set(scores["logits"]["m"]) == set(pt.POLICY_VARIANTS)
    assert list(scores["skipped"]["famA"]) == [str(root / "famA" / "0_real" / "bad.png")]
    y = scores["labels"]["famA"]
    assert len(y) == 12 and y.sum() == 6
    z = scores["logits"]["m"]
    # the centre crop never sees the corner: centre logits of a fake equal its real's; the max tile sees it
    assert np.allclose(z["center"]["famA"][y == 1], z["center"]["famA"][y == 0])
    assert (z["tiles-max"]["famA"] >= z["tiles-mean"]["famA"] - 1e-12).all()
    assert (z["tiles-top3"]["famA"] >= z["tiles-mean"]["famA"] - 1e-12).all()
    summary = pt.summarize(scores, models)
    for v in pt.POLICY_VARIANTS:
        for s in ("famA", "famB"):
            ys, zs = scores["labels"][s], scores["logits"]["m"][v][s]
            assert summary["m"][v][s]["auc"] == pytest.approx(roc_auc_score(ys, zs))
    assert summary["m"]["tiles-max"]["famA"]["auc"] == 1.0
    assert summary["m"]["tiles-max"]["famA"]["tpr_at_fpr"] == 1.0
    # the shipped threshold is applied under the stored policy only
    assert "fpr_at_threshold" in summary["m"]["tiles-mean"]["famA"]
    assert "fpr_at_threshold" not in summary["m"]["center"]["famA"]
    assert summary["m"]["center"]["mean"]["auc"] == pytest.approx(
        np.mean([summary["m"]["center"][s]["auc"] for s in ("famA", "famB")]))
    md = pt.markdown(summary, "tiles-max", ["famA", "famB"], heldout=["famB"])
    assert "| m | 1.000 / 1.00 |" in md and "famB*" in md


def test_policy_name_of_a_stored_preprocess() -> None:
    assert pt.policy_name(Preprocess(policy="tiles", aggregate="topk")) == "tiles-top3"
    assert pt.policy_name(Preprocess(policy="tiles")) == "tiles-mean"
    assert pt.policy_name(Preprocess(policy="resize256")) == "resize256"
