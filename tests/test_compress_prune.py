"""Pruning: structured pruning shrinks real networks consistently (residuals, depthwise, SE) and pruned /
sparse models round-trip bit-exactly through the .fakelite artifact."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from fakelite import artifact
from fakelite.compress.measure import count_macs, count_params
from fakelite.compress.prune import (
    keep_masks,
    prune_structured,
    prune_unstructured,
    sparsity,
)
from fakelite.compress.sparse import pack_state, unpack_sparse
from fakelite.models import create_model
from fakelite.models.shapes import reshape_to_state


@pytest.fixture(scope="module")
def small_model_path(tmp_path_factory):
    """An untrained npr_resnet23 artifact (pruning does not need a trained model to be tested)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prune_src") / "model.fakelite"
    m = create_model("npr_resnet23")
    m.preprocess = replace(m.preprocess, crop=32)
    artifact.save(m, path)
    return path


def _roundtrip(model: nn.Module) -> tuple[nn.Module, bytes]:
    b = artifact.to_bytes(model)
    header, tensors = artifact.parse(b)
    return artifact.build(header, tensors), b


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k].view(-1).view(torch.uint8) if sa[k].is_floating_point() else sa[k],
                                                    sb[k].view(-1).view(torch.uint8) if sb[k].is_floating_point() else sb[k])
        for k in sa)


@pytest.mark.parametrize("name", ["npr_resnet23", "mobilenetv3_small"])
def test_structured_pruning_shrinks_runs_and_roundtrips(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    p0, m0 = count_params(model), count_macs(model, 32)["macs"]
    prune_structured(model, 0.3, size=32)
    model.eval()
    p1, m1 = count_params(model), count_macs(model, 32)["macs"]
    assert p1 < 0.75 * p0 and m1 < 0.75 * m0
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 1) and torch.isfinite(y).all()
    # the logit layer keeps one output; feature_dim follows the pruned width
    head = model.fc if hasattr(model, "fc") else model.classifier[-1]
    assert head.out_features == 1
    assert model.forward_features(x).shape[1] == model.feature_dim
    # a fresh registry model no longer fits ...
    with pytest.raises(RuntimeError):
        create_model(name).load_state_dict(model.state_dict())
    # ... but the artifact records the shapes and rebuilds the exact network
    m2, b = _roundtrip(model)
    assert artifact.parse(b)[0]["arch"]["pruned"]
    assert _same_state(model, m2)
    assert torch.equal(model(x), m2(x))
    # reshape_to_state rebuilds from a plain state dict too
    m3 = reshape_to_state(create_model(name), model.state_dict())
    m3.load_state_dict(model.state_dict())
    assert torch.equal(model(x), m3.eval()(x))


def test_mobilenet_se_and_depthwise_stay_coupled():
    model = create_model("mobilenetv3_small").eval()
    prune_structured(model, 0.4, size=32)
    for blk in model.features[1:-1]:
        layers = list(blk.block)
        dw = layers[-3][0] if len(layers) >= 3 and hasattr(layers[-2], "fc1") else layers[-2][0]
        assert dw.groups == dw.in_channels == dw.out_channels  # still depthwise
        se = [m for m in layers if hasattr(m, "fc1")]
        if se:
            assert se[0].fc1.in_channels == se[0].fc2.out_channels == dw.out_channels
        if blk.use_residual:
            assert layers[-1][0].out_channels == (layers[0][0].in_channels)
    # the stem still reads 3 channels
    assert model.features[0][0].in_channels == 3


@pytest.mark.parametrize("glob", [True, False])
def test_unstructured_sparsity_is_stored_compactly_and_exactly(glob):
    model = create_model("mobilenetv3_small").eval()
    dense = len(artifact.to_bytes(model))
    masks = prune_unstructured(model, 0.7, global_pruning=glob)
    assert abs(sparsity(model) - 0.7) < 0.01
    if not glob:  # per layer: every layer at the ratio
        for n, m in masks.items():
            assert abs(1 - m.float().mean().item() - 0.7) < 0.02, n
    # a negative zero must survive the round trip bit for bit
    w = model.features[1].block[0][0].weight
    with torch.no_grad():
        w.view(-1)[0] = -0.0
    m2, b = _roundtrip(model)
    assert len(b) < 0.45 * dense  # (1 − 0.7)·32 + 1 bits per weight ≈ 0.33 of dense
    header = artifact.parse(b)[0]
    assert header["packing"]["sparse"]["tensors"]
    assert _same_state(model, m2)
    assert torch.signbit(m2.features[1].block[0][0].weight.view(-1)[0])
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), m2(x))
    # re-saving the loaded model stays compact
    assert len(artifact.to_bytes(m2)) == len(b)


def test_sparse_pack_unpack_identity_and_threshold():
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(64, 32, generator=g)
    sparse = dense * (torch.rand(64, 32, generator=g) > 0.8)
    tensors, packing = pack_state({"a": dense, "b": sparse, "n": torch.tensor(3)})
    assert "a" in tensors and "b" not in tensors  # dense tensor left as is
    out = unpack_sparse(tensors, packing)
    assert torch.equal(out["a"], dense) and torch.equal(out["b"], sparse) and int(out["n"]) == 3


def test_keep_masks_during_training():
    model = create_model("mobilenetv3_small")
    masks = prune_unstructured(model, 0.5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    with keep_masks(model, masks):
        for _ in range(2):
            loss = model(torch.randn(2, 3, 32, 32)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert abs(sparsity(model) - 0.5) < 0.01


def test_prune_cli_report(small_model_path, tiny_data, tmp_path):
    import typer
    from typer.testing import CliRunner

    from fakelite.commands.compress import prune_command

    app = typer.Typer()
    app.command()(prune_command)
    out = tmp_path / "pruned"
    r = CliRunner().invoke(app, ["--model", str(small_model_path), "--data", str(tiny_data), "--ratio", "0.3",
                                 "--finetune-epochs", "1", "--max-steps", "2", "--latency-runs", "2", "--quiet",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "prune_report.json").read_text())
    assert rep["after"]["params"] < rep["before"]["params"]
    assert rep["after"]["macs"] < rep["before"]["macs"]
    assert rep["after"]["packed_bytes"] < rep["before"]["packed_bytes"]
    for k in ("acc", "ap", "auc"):
        assert k in rep["after"]["test"]
    m = artifact.load(out / "model.fakelite")
    assert count_params(m) == rep["after"]["params"]
    # unstructured without fine-tuning; bad ratio is a one-line error
    r = CliRunner().invoke(app, ["--model", str(small_model_path), "--ratio", "0.6", "--unstructured",
                                 "--latency-runs", "2", "--out", str(tmp_path / "sparse")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "sparse" / "prune_report.json").read_text())
    assert rep["sparsity"]["final"] > 0.59 and rep["after"]["packed_bytes"] < 0.6 * rep["before"]["packed_bytes"]
    r = CliRunner().invoke(app, ["--model", str(small_model_path), "--ratio", "1.5", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "--ratio" in r.output
