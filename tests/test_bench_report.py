"""`fakelite bench` prints one table for one or many backends; a quantized model's ratios can be taken against
FP32 PyTorch (--fp-model), and a fake-quant baseline is called what it is."""

import json

import pytest
from typer.testing import CliRunner

from fakelite.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def w2a2(tiny_fp_model, tiny_data, tmp_path_factory):
    import fakelite
    from fakelite.pipelines.qat import run_quantization
    from fakelite.quant import QuantConfig

    out = tmp_path_factory.mktemp("w2a2")
    run_quantization(fakelite.load(tiny_fp_model[1]), tiny_data, out, QuantConfig(w_bits=2, a_bits=2), epochs=0,
                     ptq=True, calib=16, batch_size=8, quiet=True)
    return out / "model.fakelite"


def test_single_backend_prints_a_table(tiny_fp_model):
    r = runner.invoke(app, ["bench", "--model", str(tiny_fp_model[1]), "--size", "32", "--runs", "2"])
    assert r.exit_code == 0, r.output
    assert not r.output.lstrip().startswith("{") and "median" in r.output and "img/s" in r.output


def test_compare_against_fp32_pytorch(w2a2, tiny_fp_model, tmp_path):
    js = tmp_path / "b.json"
    r = runner.invoke(app, ["bench", "--model", str(w2a2), "--compare", "torch,onnx-int8", "--size", "32",
                            "--runs", "2", "--fp-model", str(tiny_fp_model[1]), "--json", str(js)])
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert list(res["results"])[0] == "torch-fp32" and len(res["results"]) == 3
    ratios = res["speedup_vs_torch-fp32"]
    assert ratios["torch-fp32"] == 1.0
    base = res["results"]["torch-fp32"]["latency_ms"]["median"]
    for b, rr in res["results"].items():
        assert ratios[b] == pytest.approx(base / rr["latency_ms"]["median"], rel=1e-2)
    assert "vs torch-fp32" in r.output and "fake-quant" not in r.output


def test_fake_quant_baseline_is_named(w2a2):
    r = runner.invoke(app, ["bench", "--model", str(w2a2), "--compare", "torch,onnx-int8", "--size", "32",
                            "--runs", "2"])
    assert r.exit_code == 0, r.output
    assert "fake-quant" in r.output and "--fp-model" in r.output


def test_export_summary_counts_every_op_of_the_graph(w2a2, tmp_path):
    onnx = pytest.importorskip("onnx")
    from collections import Counter

    out = tmp_path / "q.onnx"
    r = runner.invoke(app, ["export", "--model", str(w2a2), "--out", str(out), "--check", "0"])
    assert r.exit_code == 0, r.output
    counts = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    line = next(ln for ln in r.output.splitlines() if ln.startswith("wrote"))
    for op, n in counts.items():
        assert f"{op}×{n}" in line, (op, line)
    assert f"{sum(counts.values())} nodes" in line
