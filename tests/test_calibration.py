"""A threshold with a meaning (target FPR on real images), TPR at FPR, ECE, temperature scaling, and
`fakelite threshold` (new threshold, weights untouched bit for bit)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import fakelite
from fakelite.artifact import read
from fakelite.cli import app
from fakelite.data.folders import list_images
from fakelite.deploy.runtime import Detector
from fakelite.eval.calibration import (
    binary_nll,
    expected_calibration_error,
    fit_temperature,
    rates_at_threshold,
    threshold_at_fpr,
    tpr_at_fpr,
)

runner = CliRunner()
REAL = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # n = 10, shuffled below


def test_threshold_at_fpr_hand_made_scores():
    real = np.random.default_rng(0).permutation(REAL)
    # F = 10 %: k = 1 real may be flagged (0.9); the threshold sits between 0.8 and 0.9
    assert threshold_at_fpr(real, 0.10) == (pytest.approx(0.85), pytest.approx(0.1))
    # F = 25 %: k = 2 (0.9, 0.8 flagged), halfway between 0.7 and 0.8; achieved 20 % ≤ 25 %
    assert threshold_at_fpr(real, 0.25) == (pytest.approx(0.75), pytest.approx(0.2))
    # F = 5 % with 10 images: k = 0, nothing flagged: just above the highest real score
    t, fpr = threshold_at_fpr(real, 0.05)
    assert t == pytest.approx(0.9 + 1e-6) and fpr == 0.0 and t > 0.9
    # ties at the cut stay unflagged together (FPR below the target rather than above)
    assert threshold_at_fpr([0.5, 0.5, 0.5, 0.1], 0.5) == (pytest.approx(0.5 + 1e-6), 0.0)
    assert threshold_at_fpr([0.5, 0.5, 0.7, 0.1], 0.5) == (pytest.approx(0.6), 0.25)
    assert threshold_at_fpr(real, 1.0) == (0.0, 1.0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            threshold_at_fpr(real, bad)
    with pytest.raises(ValueError):
        threshold_at_fpr([], 0.05)
    # the rule on a bigger random set: never above the target, and as low as it can be (one more real flagged
    # if the threshold went down to the next real score)
    s = np.random.default_rng(1).random(1000)
    for f in (0.01, 0.05, 0.2):
        t, fpr = threshold_at_fpr(s, f)
        assert fpr <= f and (s >= t).sum() == int(f * 1000)
        assert (s >= s[s < t].max()).mean() > f


def test_tpr_at_fpr_and_rates_at_threshold():
    y = np.array([0] * 10 + [1] * 4)
    s = np.array(REAL + [0.95, 0.85, 0.55, 0.02])
    # FPR ≤ 10 %: ROC point at threshold 0.85 (reals ≥ 0.85: 0.9 -> FPR 0.1; fakes ≥ 0.85: 2 of 4)
    assert tpr_at_fpr(y, s, 0.10) == 0.5
    assert tpr_at_fpr(y, s, 0.0) == 0.25  # only the 0.95 fake is above every real
    assert tpr_at_fpr(y, s, 0.5) == 0.75  # ROC point at 0.5: 5 of 10 reals, 3 of 4 fakes
    assert tpr_at_fpr(np.zeros(3), [0.1, 0.2, 0.3], 0.05) is None
    assert rates_at_threshold(y, s, 0.85) == (0.1, 0.5)
    assert rates_at_threshold(np.zeros(2), [0.1, 0.9], 0.5) == (0.5, None)


def test_ece_against_a_hand_computation():
    # 15 bins of width 1/15: 0.05 and 0.06 share bin 0; 0.5 -> bin 7; 0.52 -> bin 7; 0.97 and 1.0 -> bin 14
    p = np.array([0.05, 0.06, 0.5, 0.52, 0.97, 1.0])
    y = np.array([0, 1, 1, 1, 1, 0])
    bin0 = 2 / 6 * abs(0.5 - 0.055)
    bin7 = 2 / 6 * abs(1.0 - 0.51)
    bin14 = 2 / 6 * abs(0.5 - 0.985)
    assert expected_calibration_error(y, p) == pytest.approx(bin0 + bin7 + bin14, abs=1e-12)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0
    assert expected_calibration_error([], []) is None


def test_temperature_minimises_nll_and_recovers_a_known_one():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 6, 20000)  # over-confident logits: the true probabilities are sigmoid(z / 3)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z / 3))).astype(int)
    t = fit_temperature(z, y)
    assert t == pytest.approx(3.0, rel=0.05)
    assert binary_nll(z, y, t) < min(binary_nll(z, y, t * 1.01), binary_nll(z, y, t / 1.01))
    assert binary_nll(z, y, t) < binary_nll(z, y, 1.0)
    with pytest.raises(ValueError, match="real and fake"):
        fit_temperature(z, np.zeros(z.size))


def test_threshold_command_keeps_weights_bit_for_bit(tiny_fp_model, tiny_data, tmp_path):
    _, src = tiny_fp_model
    out = tmp_path / "t.fakelite"
    r = runner.invoke(app, ["threshold", "--model", str(src), "--real", str(tiny_data / "val"), "--target-fpr",
                            "0.25", "--temperature-data", str(tiny_data / "val"), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    h0, t0 = read(src)
    h1, t1 = read(out)
    assert set(t0) == set(t1) and all(torch.equal(t0[k], t1[k]) for k in t0)
    assert h0["content_hash"] == h1["content_hash"]
    src_ = h1["threshold_source"]
    assert src_["method"] == "target_fpr" and src_["target_fpr"] == 0.25 and src_["n_real"] == 8
    assert src_["data"] == str(tiny_data / "val") and src_["policy"] == "center" and src_["fpr"] <= 0.25
    assert h1["temperature"] == pytest.approx(src_["temperature"]["value"]) and h1["temperature"] != 1.0
    assert src_["temperature"]["nll_after"] <= src_["temperature"]["nll_before"]
    # the stored threshold does what it says on the real images, through the Detector (sigmoid(logit / T))
    det = Detector.load(out)
    reals = list_images(tiny_data / "val" / "0_real")
    flagged = (det.predict_arrays([np.array(Image.open(p).convert("RGB")) for p in reals]) >= det.threshold).mean()
    assert flagged == pytest.approx(src_["fpr"]) and flagged <= 0.25
    m = fakelite.load(out)
    assert m.threshold == h1["threshold"] and m.temperature == h1["temperature"]
    # eval reads the stored target FPR for tpr_at_fpr
    j = tmp_path / "e.json"
    r = runner.invoke(app, ["eval", "--model", str(out), "--data", str(tiny_data / "test"), "--json", str(j),
                            "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads(j.read_text())
    assert res["target_fpr"] == 0.25 and res["temperature"] == h1["temperature"]
    for m_ in [*res["sets"].values(), res["mean"]]:
        for k in ("tpr_at_fpr", "fpr_at_threshold", "tpr_at_threshold", "ece"):
            assert 0.0 <= m_[k] <= 1.0


def test_threshold_command_errors(tiny_fp_model, tmp_path):
    r = runner.invoke(app, ["threshold", "--model", str(tiny_fp_model[1]), "--real", str(tmp_path / "none"),
                            "--out", str(tmp_path / "x.fakelite")])
    assert r.exit_code == 2 and "no such folder" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["threshold", "--model", str(tiny_fp_model[1]), "--real", str(tmp_path),
                            "--target-fpr", "2", "--out", str(tmp_path / "x.fakelite")])
    assert r.exit_code == 2


def test_quantize_stores_policy_and_target_fpr_threshold(tiny_fp_model, tiny_data, tmp_path):
    out = tmp_path / "q"
    r = runner.invoke(app, ["quantize", "--model", str(tiny_fp_model[1]), "--data", str(tiny_data), "--out", str(out),
                            "--ptq", "--w-bits", "4", "--a-bits", "4", "--quantizer", "lsq", "--calib", "16",
                            "--policy", "tiles", "--target-fpr", "0.25", "--quiet"])
    assert r.exit_code == 0, r.output
    m = fakelite.load(out / "model.fakelite")
    assert m.preprocess.policy == "tiles" and m.fakelite_quant is not None
    src = m.threshold_source
    assert (src["method"], src["target_fpr"], src["policy"], src["n_real"]) == ("target_fpr", 0.25, "tiles", 8)
    assert src["fpr"] <= 0.25 and json.loads((out / "metrics.json").read_text())["threshold"] == m.threshold
