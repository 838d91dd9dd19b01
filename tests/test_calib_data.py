"""Calibrating without the training set: a small folder of the user's images, or ZeroQ's data-free inputs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import randomize_bn
from torch import nn
from typer.testing import CliRunner

import fakelite
from fakelite.cli import app
from fakelite.models import create_model
from fakelite.quant.calib_data import calibration_set, folder_calibration
from fakelite.quant.zeroq import ZeroQConfig, bn_layers, bn_statistic_loss, distill_inputs

runner = CliRunner()


def _bn_inputs(model, x):
    layers = bn_layers(model)
    got = {}
    hs = [bn.register_forward_hook(lambda m, i, o, k=k: got.__setitem__(k, i[0])) for k, bn in enumerate(layers)]
    model(x)
    for h in hs:
        h.remove()
    return [got[k] for k in range(len(layers))], layers


def test_bn_statistic_loss_is_zero_when_statistics_match():
    """ZeroQ eq. (4): set every BN's running stats to a batch's own statistics (momentum 1, biased variance); the
    loss of that batch is then only the input term, and another batch's loss is larger."""
    torch.manual_seed(0)
    m = create_model("npr_resnet23", input="rgb")
    x = torch.randn(6, 3, 32, 32)
    x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)  # input term 0 as well
    for bn in bn_layers(m):
        bn.momentum = 1.0
        bn.track_running_stats = True
    m.train()
    with torch.no_grad():
        acts, layers = _bn_inputs(m, x)
        for a, bn in zip(acts, layers, strict=True):  # biased variance (torch stores the unbiased one)
            bn.running_var.copy_(a.transpose(0, 1).reshape(a.shape[1], -1).var(1, unbiased=False))
    m.eval()
    with torch.no_grad():
        acts, layers = _bn_inputs(m, x)
        assert float(bn_statistic_loss(acts, layers, x)) < 1e-6
        y = torch.randn(6, 3, 32, 32) * 2 + 0.5
        acts, layers = _bn_inputs(m, y)
        assert float(bn_statistic_loss(acts, layers, y)) > 1.0


def test_zeroq_inputs_match_bn_statistics_and_leave_model_untouched():
    torch.manual_seed(0)
    m = randomize_bn(create_model("npr_resnet23")).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, info = distill_inputs(m, 6, 32, ZeroQConfig(steps=40, batch_size=4, seed=1))
    assert x.shape == (6, 3, 32, 32) and torch.isfinite(x).all()
    assert info["bn_layers"] == 24 and info["steps"] == 80
    assert info["loss_end"] < 0.3 * info["loss_start"]
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    x2, _ = distill_inputs(m, 6, 32, ZeroQConfig(steps=40, batch_size=4, seed=1))
    assert torch.equal(x, x2)  # seeded
    with pytest.raises(ValueError, match="BatchNorm"):
        distill_inputs(nn.Sequential(nn.Conv2d(3, 1, 1)), 2, 8)


def test_folder_calibration_labelled_unlabelled_and_bad(tmp_path, tiny_data, tiny_fp_model):
    _, fp_path = tiny_fp_model
    fp = fakelite.load(fp_path)
    cs = folder_calibration(tiny_data / "test" / "gen_a", fp, n=10, batch_size=4)
    assert cs.n == 10 and [len(b[1]) for b in cs.batches] == [4, 4, 2]
    assert cs.info["labels"] == "folders" and cs.info["real"] == 5 and cs.info["fake"] == 5
    # unlabelled images: pseudo-labelled by the model
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (tiny_data / "test" / "gen_b" / "1_fake").iterdir():
        shutil.copy(p, flat / f"f_{p.name}")
    (flat / "broken.png").write_bytes(b"not a png")
    cs = folder_calibration(flat, fp, n=64, batch_size=4)
    assert cs.n == 8 and cs.info["labels"].startswith("pseudo") and list(cs.info["skipped"]) == [str(flat / "broken.png")]
    with torch.no_grad():
        want = torch.cat([(torch.sigmoid(fp(x).view(-1)) >= fp.threshold).float() for x, _ in cs.batches])
    assert torch.equal(torch.cat([b[1] for b in cs.batches]), want)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty: no images"):
        folder_calibration(empty, fp)
    with pytest.raises(ValueError, match="no such folder"):
        calibration_set(tmp_path / "missing", fp)


def test_ptq_from_a_calibration_folder_without_training_data(tmp_path, tiny_data, tiny_fp_model):
    _, fp_path = tiny_fp_model
    out = tmp_path / "ptq"
    r = runner.invoke(app, ["quantize", "--model", str(fp_path), "--ptq", "--calib-data", str(tiny_data / "test" / "gen_a"),
                            "--out", str(out), "--w-bits", "8", "--a-bits", "8", "--quantizer", "minmax", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "agrees with the FP model" in r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["calib_images"] == 16 and m["calibration"]["source"] == "folder" and m["val"] is None
    assert m["calib_agreement"]["decision_agreement"] >= 0.9  # W8A8 stays with the FP model
    q = fakelite.load(out / "model.fakelite")
    assert q.threshold == pytest.approx(m["threshold"]) and "no validation data" in m["threshold_source"]
    assert q.provenance["calibration"]["path"] == str(tiny_data / "test" / "gen_a")
    # QAT still needs the training data; nothing at all is an error too
    r = runner.invoke(app, ["quantize", "--model", str(fp_path), "--calib-data", "zeroq", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "QAT needs --data" in r.output
    r = runner.invoke(app, ["quantize", "--model", str(fp_path), "--ptq", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--data is required" in r.output


def test_ptq_zeroq_data_free_cli(tmp_path, tiny_fp_model):
    _, fp_path = tiny_fp_model
    out = tmp_path / "zq"
    r = runner.invoke(app, ["quantize", "--model", str(fp_path), "--ptq", "--calib-data", "zeroq", "--calib", "8",
                            "--zeroq-steps", "10", "--batch-size", "4", "--size", "32", "--out", str(out),
                            "--w-bits", "4", "--a-bits", "4", "--quantizer", "lsq", "--quiet"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["calibration"]["source"] == "zeroq" and m["calib_images"] == 8
    assert m["calibration"]["zeroq"]["steps"] == 20 and m["calibration"]["zeroq"]["loss_end"] < m["calibration"]["zeroq"]["loss_start"]
    q = fakelite.load(out / "model.fakelite")
    assert torch.isfinite(q(torch.randn(2, 3, 32, 32))).all()


def test_defakeq_from_calibration_folder_without_data(tmp_path, tiny_data, tiny_fp_model):
    from fakelite.pipelines.defakeq import run_defakeq

    _, fp_path = tiny_fp_model
    fp = fakelite.load(fp_path)
    cs = calibration_set(tiny_data / "test" / "gen_b", fp, n=16, batch_size=8)
    out = tmp_path / "dq"
    m = run_defakeq(fp, None, out, budget_mb=0.6, bits=(2, 3), stage_epochs=0.01, final_epochs=0.01,
                    calib_batches=cs.batches, calib_info=cs.info)
    assert m["calib_images"] == 16 and "val" not in m and m["calib_agreement"]["n"] == 16
    q = fakelite.load(out / "model.fakelite")
    assert q.provenance["calibration"]["source"] == "folder"
    with pytest.raises(ValueError, match="--calib-data"):
        run_defakeq(fp, None, tmp_path / "x", budget_mb=0.6)


def test_zeroq_label_term_gives_both_classes():
    """The optional GDFQ-style class term (alternating targets) steers distilled inputs to both sides."""
    torch.manual_seed(0)
    m = randomize_bn(create_model("npr_resnet23", input="rgb")).eval()
    z = {}
    for lw in (0.0, 100.0):
        x, _ = distill_inputs(m, 8, 32, ZeroQConfig(steps=30, batch_size=8, label_weight=lw))
        with torch.no_grad():
            z[lw] = m(x).view(-1)
    assert float(z[100.0][1::2].min()) > 0.5 > -0.5 > float(z[100.0][0::2].max())  # odd targets fake, even real
    assert float(z[0.0].abs().max()) < 0.5  # without the term the logits stay near the untrained head's 0


def test_match_threshold_follows_the_fp_decisions():
    """A quantized model whose logits are the FP logits shifted by −3 gets a threshold 3 logits lower."""
    from fakelite.quant.calib_data import match_threshold

    class Shift(nn.Module):
        def __init__(self, base, d):
            super().__init__()
            self.base, self.d = base, d

        def forward(self, x):
            return self.base(x) + self.d

    torch.manual_seed(0)
    fp = nn.Sequential(nn.Flatten(), nn.Linear(12, 1)).eval()
    fp.threshold = 0.5
    batches = [(torch.randn(16, 3, 2, 2), torch.zeros(16)) for _ in range(2)]
    q = Shift(fp, -3.0)
    t = match_threshold(fp, q, batches)
    with torch.no_grad():
        a = torch.cat([fp(x).view(-1) for x, _ in batches])
        b = torch.cat([q(x).view(-1) for x, _ in batches])
    assert bool(((b >= torch.logit(torch.tensor(t))) == (a >= 0)).all())
    assert 0.01 < t < 0.5
    # all FP decisions one class: nothing to match
    assert match_threshold(fp, q, [(torch.zeros(4, 3, 2, 2), torch.zeros(4))]) is None
