"""`fakelite bench` prints one table for one or many backends; a quantized model's ratios can be taken against
FP32 PyTorch (--fp-model), and a fake-quant baseline is called what it is."""

import json
from pathlib import Path

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
    import fakelite
    from fakelite.quant.cost import layer_macs

    macs = sum(x["macs"] for x in layer_macs(fakelite.load(w2a2), 32))
    assert macs > 0
    for b, rr in res["results"].items():  # GMAC/s = the model's MACs at 32² / median latency
        assert rr["macs"] == macs, b
        assert rr["gmac_per_s"] == pytest.approx(macs / rr["latency_ms"]["median"] / 1e6, rel=2e-2, abs=0.01)
        if rr["int8_peak_gmac_per_s"] is not None:
            assert rr["peak_fraction"] == pytest.approx(rr["gmac_per_s"] / rr["int8_peak_gmac_per_s"], rel=2e-2,
                                                        abs=1e-4)
    assert "GMAC/s" in r.output


def test_int8_peak_from_fixed_flags_and_clock():
    """Peak = threads × MHz × int8 MACs/cycle/core of the best ISA (docs/deploy.md, Roofline), hand-computed."""
    from fakelite.deploy.host import int8_peak, rates

    zen5 = {"flags": ["avx2", "avx512bw", "avx512_vnni", "avx512f"], "mhz": 2596.096, "vendor": "AuthenticAMD",
            "cpu_family": 26, "usable_cpus": 2}
    p = int8_peak(zen5, threads=2)  # 2 × 2596.096e6 × 64 MACs × 2 instr/cycle = 664.6 GMAC/s
    assert p["gmac_per_s"] == 664.6 and p["macs_per_cycle"] == 128 and p["threads"] == 2
    assert int8_peak(zen5 | {"cpu_family": 25}, threads=1)["gmac_per_s"] == 166.2  # Zen 4: 1 × 2596.096 × 64 = 166.15
    assert int8_peak(zen5, threads=8)["threads"] == 2  # capped at the usable CPUs
    amx = {"flags": ["amx_int8", "avx512_vnni"], "mhz": 2000.0}
    assert int8_peak(amx, threads=1)["gmac_per_s"] == 2048.0  # 1 × 2 GHz × 1024
    avx2 = {"flags": ["avx2", "fma"], "mhz": 3000.0}
    assert int8_peak(avx2, threads=1)["gmac_per_s"] == 64.0  # 3 GHz × 32/3 MACs × 2 ports
    assert int8_peak({"flags": ["avx2"], "mhz": None}) is None and int8_peak({"flags": [], "mhz": 3000.0}) is None
    r = rates(1_720_000_000, 10.0, avx2, threads=1)  # 1.72 GMAC in 10 ms = 172 GMAC/s > the AVX2 peak of 64
    assert r["gmac_per_s"] == 172.0 and r["peak_fraction"] == pytest.approx(172 / 64, rel=1e-3)
    assert rates(None, 10.0, avx2)["gmac_per_s"] is None


def test_cpu_mhz_override_sets_the_clock_of_the_int8_peak(monkeypatch):
    """FAKELITE_CPU_MHZ (a measured turbo clock) replaces the VM's nominal MHz; garbage is ignored, never raised."""
    from fakelite.deploy.host import host_info, int8_peak

    monkeypatch.setenv("FAKELITE_CPU_MHZ", "3900")
    info = host_info(1)
    assert info["mhz"] == 3900.0 and info["mhz_source"] == "FAKELITE_CPU_MHZ"
    zen5 = {"flags": ["avx512_vnni"], "mhz": info["mhz"], "vendor": "AuthenticAMD", "cpu_family": 26}
    assert int8_peak(zen5, threads=1)["gmac_per_s"] == 499.2  # 3900 × 128 / 1000
    for bad in ("fast", "-1", "", "inf", "nan"):
        monkeypatch.setenv("FAKELITE_CPU_MHZ", bad)
        assert host_info(1)["mhz_source"] != "FAKELITE_CPU_MHZ"


def test_cpu_clock_benchmark_measures_a_plausible_clock(monkeypatch):
    """benchmarks/cpu_clock.py: dependent adds per CPU-second of one thread lie between 0.3 and 10 GHz."""
    import platform
    import shutil

    if platform.machine() not in ("x86_64", "aarch64") or not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("needs a C compiler on x86-64/AArch64")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    monkeypatch.setenv("FAKELITE_CPU_MHZ", "1234")  # the "reported" clock must ignore the override
    from cpu_clock import measure

    r = measure(rounds=1, iters=20_000_000)
    assert 300 < r["measured_mhz"] < 10_000 and len(r["rounds_mhz"]) == 1
    assert r["reported_mhz"] != 1234.0


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
