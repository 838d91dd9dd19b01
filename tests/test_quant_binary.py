"""Binary (W1A1) QAT and PTQ end to end on tiny data, and the training loop's refusal to save a diverged model."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import fakelite
from fakelite.cli import app
from fakelite.data.dataset import ImageDataset, split_items
from fakelite.eval.evaluate import predict_dataset
from fakelite.quant import QuantConfig
from fakelite.train.loop import TrainConfig, TrainingDiverged, fit

runner = CliRunner()


def test_binary_config_is_one_bit():
    q = QuantConfig(w_bits=2, a_bits=2, quantizer="binary")
    assert (q.w_bits, q.a_bits) == (1, 1)


@pytest.mark.parametrize("mode", ["qat", "ptq"])
def test_binary_quantize_end_to_end(tiny_fp_model, tiny_data, tmp_path, mode):
    _, fp_path = tiny_fp_model
    out = tmp_path / mode
    argv = ["quantize", "--model", str(fp_path), "--data", str(tiny_data), "--out", str(out), "--quantizer",
            "binary", "--epochs", "1", "--max-steps", "2", "--calib", "16", "--batch-size", "8", "--quiet"]
    r = runner.invoke(app, argv + (["--ptq"] if mode == "ptq" else []))
    assert r.exit_code == 0, r.output
    assert f"{mode.upper()} W1A1 binary" in r.output and "W2A2 binary" not in r.output.replace("(not W2A2)", "")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["quant"]["w_bits"] == 1 and metrics["quant"]["a_bits"] == 1
    m = fakelite.load(out / "model.fakelite")
    assert all(torch.isfinite(t).all() for t in m.state_dict().values() if t.is_floating_point())
    bits = {(layer["w_bits"], layer["a_bits"]) for layer in m.fakelite_quant["plan"].values()}
    assert (1, 1) in bits and bits <= {(1, 1), (8, 8)}
    ds = ImageDataset(split_items(tiny_data, "val"), m.preprocess, train=False)
    scores, _, _ = predict_dataset(m, ds, 16)
    assert np.isfinite(scores).all()
    assert np.ptp(scores) > 1e-4, "a binarised model with constant output (RSign of a ReLU output at α=0)"


def _nan_after(step: int, kind: str):
    calls = {"n": 0}

    def extra(model, **_):
        calls["n"] += 1
        p = next(model.parameters())
        if calls["n"] < step:
            return p.sum() * 0.0
        if kind == "loss":
            return p.sum() * float("nan")
        return (p.sum() * 0.0).abs().sqrt()  # finite loss (0), NaN gradient: the update poisons the weights

    return extra


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_fit_refuses_to_save_a_diverged_model(tiny_data, tmp_path, kind):
    from fakelite.models import create_model

    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"epoch 1 step 2"):
        fit(create_model("npr_resnet23"), tiny_data, out,
            TrainConfig(epochs=1, batch_size=8, crop=32, quiet=True, precise_bn=0), extra_loss=_nan_after(2, kind))
    assert not (out / "model.fakelite").exists() and not (out / "checkpoint.safetensors").exists()


def test_quantize_has_grad_clip_and_reports_it(tiny_fp_model, tiny_data, tmp_path):
    _, fp_path = tiny_fp_model
    out = tmp_path / "clip"
    r = runner.invoke(app, ["quantize", "--model", str(fp_path), "--data", str(tiny_data), "--out", str(out),
                            "--quantizer", "binary", "--epochs", "1", "--max-steps", "1", "--calib", "8",
                            "--batch-size", "8", "--grad-clip", "10", "--quiet"])
    assert r.exit_code == 0, r.output
    g = json.loads((out / "metrics.json").read_text())["grad_guard"]
    assert g["max_norm"] == 10 and g["grads_seen"] > 0
