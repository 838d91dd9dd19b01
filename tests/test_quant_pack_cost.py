"""Bit packing (bit-exact save → load for every quantizer kind), artifact size, MACs/OPs/storage."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fakelite import artifact
from fakelite.models import create_model
from fakelite.quant import LayerQuantSpec, QuantConfig, calibrate, quantize
from fakelite.quant.cost import model_cost
from fakelite.quant.pack import (
    decode_keys,
    encode_keys,
    pack_bits,
    pack_state_dict,
    packed_nbytes,
    state_nbytes,
    unpack_bits,
    unpack_state_dict,
)

torch.set_num_threads(1)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(0, 200), seed=st.integers(0, 1000))
def test_pack_bits_round_trip(bits, n, seed):
    codes = torch.randint(0, 2**bits, (n,), generator=torch.Generator().manual_seed(seed))
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(n, bits)
    assert torch.equal(unpack_bits(packed, bits, n), codes)


def test_pack_bits_layout():
    assert pack_bits(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]  # four 2-bit codes per byte, LSB first
    assert pack_bits(torch.tensor([0xA, 0x5]), 4).tolist() == [0x5A]  # two per byte
    assert pack_bits(torch.tensor([7, 7, 7]), 3).tolist() == [0xFF, 0x01]  # 9 bits across two bytes
    assert packed_nbytes(1000, 3) == 375
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([4]), 2)
    keys = ["a.bn.weight", "a.bn.bias", "b.scale", "top", "a.bn.running_mean"]
    assert decode_keys(encode_keys(keys)) == keys


def _train_a_little(m, steps: int = 2):
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x = torch.randn(2, 3, 32, 32, generator=g)
        loss = m(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


FAMILIES = ["minmax", "percentile", "lsq", "n2uq", "slr-lsq", "slr-n2uq", "slr-minmax", "binary"]


@pytest.mark.parametrize("family,bits", [(f, 2) for f in FAMILIES] + [("n2uq", 3), ("lsq", 3), ("slr-n2uq", 4)])
def test_save_load_bit_exact(tmp_path, family, bits):
    arch = "npr_resnet23"
    cfg = QuantConfig(w_bits=bits, a_bits=bits, quantizer=family, cqb=family.startswith("slr"),
                      layers={"layer2.3.conv3": LayerQuantSpec(w_bits=5, a_bits=6)})
    m = quantize(create_model(arch), cfg)
    calibrate(m, [torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))])
    _train_a_little(m)  # moves LSQ steps, N2UQ clips/intervals, SLR τ, BN statistics
    m.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = m(x)
    path = artifact.save(m, tmp_path / "q.fakelite", threshold=0.3)
    r = artifact.load(path)
    assert r.fakelite_quant == artifact.read(path)[0]["quant"]
    assert set(r.state_dict()) == set(m.state_dict())
    with torch.no_grad():
        out = r(x)
    assert torch.equal(out, ref)
    for name in ("layer1.0.conv1", "layer2.3.conv3", "conv1", "fc"):
        a, b = r.get_submodule(name), m.get_submodule(name)
        assert torch.equal(a.quantized_weight(), b.quantized_weight())


def test_unpack_gives_the_state_dict_keys():
    m = quantize(create_model("mobilenetv3_small"), QuantConfig(w_bits=3, a_bits=3, quantizer="n2uq", cqb=True))
    tensors, packing = pack_state_dict(m)
    sd = unpack_state_dict(tensors, packing)
    ref = m.state_dict()
    assert list(sorted(sd)) == list(sorted(ref))
    assert all(sd[k].shape == ref[k].shape and sd[k].dtype == ref[k].dtype for k in ref)
    m.load_state_dict(sd, strict=True)
    assert unpack_state_dict(dict(ref), None) == dict(ref)


def test_w2a2_artifact_is_12x_smaller(tmp_path):
    fp = create_model("npr_resnet23")
    fp_path = artifact.save(fp, tmp_path / "fp.fakelite")
    q = quantize(create_model("npr_resnet23"), QuantConfig(w_bits=2, a_bits=2, quantizer="n2uq"))
    calibrate(q, [torch.randn(2, 3, 32, 32)])
    q_path = artifact.save(q, tmp_path / "q.fakelite", provenance={"data": "x" * 200, "epochs": 50})
    ratio = fp_path.stat().st_size / q_path.stat().st_size
    assert ratio >= 12.0, ratio
    c = model_cost(q, 224)
    assert c["storage_bytes"] == state_nbytes(pack_state_dict(q)[0])
    assert c["storage_bytes"] < q_path.stat().st_size < c["storage_bytes"] + 40_000


def test_mac_counts():
    m = create_model("npr_resnet23")
    assert model_cost(m, 224)["macs"] == pytest.approx(1.717e9, rel=5e-3)
    assert model_cost(m, 256)["macs"] == pytest.approx(2.243e9, rel=5e-3)
    c = model_cost(m)  # the model's crop (224)
    assert c["size"] == 224 and c["params"] == 1_437_761 and c["ops_ratio"] == 1.0 and c["bops"] == 0
    assert c["storage_ratio"] == 1.0 and set(c) >= {"params", "flops", "bops", "ops", "storage_bytes",
                                                    "fp32_storage_bytes", "storage_ratio", "ops_ratio", "size"}
    assert model_cost(create_model("resnet50"), 224)["macs"] == pytest.approx(4.1e9, rel=0.01)


def test_w2a2_ops_and_storage_match_qmdd_table4():
    m = quantize(create_model("npr_resnet23"), QuantConfig(w_bits=2, a_bits=2, quantizer="n2uq", first_last="fp"))
    c = model_cost(m, 224)
    assert c["ops"] == pytest.approx(127.6e6, rel=5e-3)
    assert c["ops_ratio"] == pytest.approx(13.45, rel=5e-3)
    assert c["paper_storage_bytes"] == pytest.approx(0.406e6, rel=5e-3)
    assert c["storage_ratio"] > 12
    m3 = quantize(create_model("npr_resnet23"), QuantConfig(w_bits=3, a_bits=3, quantizer="n2uq", first_last="fp"))
    assert model_cost(m3, 224)["ops"] == pytest.approx(260e6, rel=0.01)
    m4 = quantize(create_model("npr_resnet23"), QuantConfig(w_bits=4, a_bits=4, quantizer="lsq", first_last="fp"))
    c4 = model_cost(m4, 224)
    assert c4["ops"] == pytest.approx(446e6, rel=0.01)
    assert c4["paper_storage_bytes"] == pytest.approx(0.762e6, rel=0.01)
    # 8-bit stem/fc cost the same OPs as FP ones (MACs·64/64); CQB adds FP element-wise work (~23 % at W2A2)
    m8 = quantize(create_model("npr_resnet23"), QuantConfig(w_bits=2, a_bits=2, quantizer="n2uq", cqb=True))
    c8 = model_cost(m8, 224)
    assert c["ops"] < c8["ops"] < 1.3 * c["ops"]


def _cli():
    import typer

    from fakelite.commands.quant import cost_command, quantize_command

    app = typer.Typer()
    app.command("quantize")(quantize_command)
    app.command("cost")(cost_command)
    return app


def test_quantize_and_cost_commands(tiny_data, tiny_fp_model, tmp_path):
    import json

    from typer.testing import CliRunner

    _, fp_path = tiny_fp_model
    runner = CliRunner()
    app = _cli()
    ptq = tmp_path / "ptq"
    r = runner.invoke(app, ["quantize", "--model", str(fp_path), "--data", str(tiny_data), "--out", str(ptq),
                            "--w-bits", "4", "--a-bits", "4", "--quantizer", "percentile", "--ptq", "--calib", "16",
                            "--batch-size", "8", "--quiet"])
    assert r.exit_code == 0, r.output
    m = artifact.load(ptq / "model.fakelite")
    assert m.fakelite_quant["plan"]["layer1.0.conv1"]["w_bits"] == 4
    assert json.loads((ptq / "metrics.json").read_text())["cost"]["bops"] > 0
    qat = tmp_path / "qat"
    r = runner.invoke(app, ["quantize", "--model", str(fp_path), "--data", str(tiny_data), "--out", str(qat),
                            "--quantizer", "slr-n2uq", "--cqb", "--epochs", "1", "--max-steps", "2", "--calib", "8",
                            "--batch-size", "4", "--teacher-kd", "--quiet"])
    assert r.exit_code == 0, r.output
    assert artifact.load(qat / "model.fakelite").fakelite_quant["config"]["cqb"] is True
    r = runner.invoke(app, ["cost", "--model", str(qat / "model.fakelite"), "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["size"] == 32 and c["ops"] < c["macs"]
    r = runner.invoke(app, ["quantize", "--model", str(fp_path), "--data", str(tiny_data), "--out", str(tmp_path / "x"),
                            "--recipe", "nonsense"])
    assert r.exit_code == 2 and "not available" in r.output
    r = runner.invoke(app, ["quantize", "--model", str(fp_path), "--data", str(tiny_data), "--out", str(tmp_path / "x"),
                            "--quantizer", "bogus"])
    assert r.exit_code == 2
