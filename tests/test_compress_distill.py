"""Distillation: the KD loss against a hand-computed value, the feature projection learns, and students
(fresh, pruned, quantized) train through `fakelite distill`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fakelite import artifact
from fakelite.compress.distill import (
    DistillConfig,
    FeatureProjection,
    capture_features,
    distillation_loss,
    feature_dim,
    feature_loss,
)
from fakelite.models import create_model
from fakelite.pipelines.distill import distill
from fakelite.train.loop import TrainConfig, kd_loss


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_kd_loss_matches_hand_computed_value():
    zs, zt, T = 0.5, 2.0, 4.0
    # softened two-class distributions, by hand
    ps1, pt1 = _sig(zs / T), _sig(zt / T)  # σ(0.125), σ(0.5)
    kl = pt1 * math.log(pt1 / ps1) + (1 - pt1) * math.log((1 - pt1) / (1 - ps1))
    expected = T * T * kl
    got = kd_loss(torch.tensor([zs]), torch.tensor([zt]), T).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # by hand: 0.622459·ln(0.622459/0.531209) + 0.377541·ln(0.377541/0.468791) = 0.016944; ×T² = 0.2711
    assert got == pytest.approx(0.2711, abs=2e-4)
    # identical logits: zero; batch mean of two rows
    assert kd_loss(torch.tensor([1.3]), torch.tensor([1.3]), T).item() == pytest.approx(0.0, abs=1e-7)
    two = kd_loss(torch.tensor([zs, 0.0]), torch.tensor([zt, 0.0]), T).item()
    assert two == pytest.approx(expected / 2, rel=1e-5)
    # the combined loss: (1 − α)·BCE + α·T²·KL
    alpha, y = 0.25, 1.0
    bce = -math.log(_sig(zs))
    comb = distillation_loss(torch.tensor([zs]), torch.tensor([zt]), torch.tensor([y]), T, alpha).item()
    assert comb == pytest.approx((1 - alpha) * bce + alpha * expected, rel=1e-5)


def test_feature_projection_trains():
    torch.manual_seed(0)
    student, teacher = create_model("mobilenetv3_small").eval(), create_model("npr_resnet23").eval()
    ds, dt = feature_dim(student), feature_dim(teacher)
    assert (ds, dt) == (576, 512)
    proj = FeatureProjection(ds, dt)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), capture_features(student) as fs, capture_features(teacher) as ft:
        student(x), teacher(x)
    assert fs["x"].shape == (4, ds) and ft["x"].shape == (4, dt)
    opt = torch.optim.Adam(proj.parameters(), lr=1e-2)
    first = feature_loss(proj, fs["x"], ft["x"]).item()
    for _ in range(60):
        loss = feature_loss(proj, fs["x"], ft["x"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first  # the projection learns (what remains is teacher variance the
    # near-constant features of an untrained student cannot explain)


def test_distill_feature_and_logits_end_to_end(tiny_data, tmp_path):
    torch.manual_seed(0)
    teacher = create_model("npr_resnet23").eval()
    student = create_model("mobilenetv3_small", input="npr")
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, crop=32, max_steps_per_epoch=3, quiet=True)
    m = distill(teacher, student, tiny_data, tmp_path / "kd", cfg, DistillConfig(4.0, 0.5, feature_weight=1.0))
    assert m["feature_proj_loss"] < m["feature_proj_loss_first"]
    loaded = artifact.load(tmp_path / "kd" / "model.fakelite")
    # the projection is not part of the saved student
    assert not any("proj" in k for k in loaded.state_dict())
    assert loaded.header["provenance"]["distill"]["alpha"] == 0.5
    with pytest.raises(ValueError):
        distill(teacher, create_model("mobilenetv3_small"), tiny_data, tmp_path / "bad", cfg, DistillConfig(alpha=1.5))


def test_distill_cli_with_pruned_and_quantized_students(tiny_data, tmp_path):
    import typer
    from typer.testing import CliRunner

    from fakelite.commands.compress import distill_command
    from fakelite.compress.prune import prune_structured

    app = typer.Typer()
    app.command()(distill_command)
    teacher_path = tmp_path / "teacher.fakelite"
    artifact.save(create_model("npr_resnet23"), teacher_path)
    pruned = prune_structured(create_model("mobilenetv3_small"), 0.3, size=32)
    pruned_path = artifact.save(pruned, tmp_path / "pruned.fakelite")
    common = ["--teacher", str(teacher_path), "--data", str(tiny_data), "--epochs", "1", "--max-steps", "2",
              "--batch-size", "8", "--quiet"]
    r = CliRunner().invoke(app, [*common, "--student", str(pruned_path), "--out", str(tmp_path / "kd_pruned")])
    assert r.exit_code == 0, r.output
    out = artifact.load(tmp_path / "kd_pruned" / "model.fakelite")
    assert out.header["arch"]["pruned"]
    assert sum(p.numel() for p in out.parameters()) == sum(p.numel() for p in pruned.parameters())

    from fakelite.quant import QuantConfig, quantize

    q = quantize(create_model("mobilenetv3_small"), QuantConfig(w_bits=4, a_bits=4, quantizer="lsq"))
    q_path = artifact.save(q, tmp_path / "q.fakelite")
    r = CliRunner().invoke(app, [*common, "--student", str(q_path), "--out", str(tmp_path / "kd_q")])
    assert r.exit_code == 0, r.output
    assert artifact.load(tmp_path / "kd_q" / "model.fakelite").header["quant"]["config"]["w_bits"] == 4
    metrics = json.loads((tmp_path / "kd_q" / "metrics.json").read_text())
    assert metrics["history"]
    r = CliRunner().invoke(app, [*common, "--student", "no_such_model", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "no_such_model" in r.output
