"""bench JSON, stream loop (headless), and the CLI wrappers."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from fakelite.commands import deploy as cmds

KEYS = {"backend", "size", "threads", "batch", "latency_ms", "throughput_ips", "peak_rss_mb", "model_bytes"}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("export")(cmds.export_command)
    app.command("detect")(cmds.detect_command)
    app.command("bench")(cmds.bench_command)
    app.command("stream")(cmds.stream_command)
    return app


def test_bench_json_and_export_cli(tiny_fp_model, tiny_data, tmp_path):
    r = CliRunner()
    onnx_path = tmp_path / "m.onnx"
    res = r.invoke(_app(), ["export", "--model", str(tiny_fp_model[1]), "--out", str(onnx_path), "--data",
                            str(tiny_data / "test"), "--check", "4"])
    assert res.exit_code == 0, res.output
    assert "parity on 4 images" in res.output and "same decisions 4/4" in res.output
    js = tmp_path / "b.json"
    res = r.invoke(_app(), ["bench", "--model", str(onnx_path), "--backend", "onnx", "--size", "32", "--runs", "3",
                            "--json", str(js)])
    assert res.exit_code == 0, res.output
    d = json.loads(js.read_text())
    assert KEYS <= set(d) and set(d["latency_ms"]) == {"median", "p90"}
    assert d["backend"] == "onnx" and d["size"] == 32 and d["model_bytes"] == onnx_path.stat().st_size
    assert 0 < d["latency_ms"]["median"] <= d["latency_ms"]["p90"]
    assert d["macs"] is None and d["gmac_per_s"] is None  # a bare .onnx: no torch model to count MACs on
    res = r.invoke(_app(), ["bench", "--model", str(onnx_path), "--backend", "gpu"])
    assert res.exit_code != 0 and "unknown backend" in res.output


def test_detect_cli_and_stream(tiny_fp_model, tiny_data, tmp_path):
    from fakelite.deploy.samples import FetchError, fetch

    r = CliRunner()
    js = tmp_path / "d.json"
    res = r.invoke(_app(), ["detect", str(tiny_data / "test" / "gen_a"), "--model", str(tiny_fp_model[1]), "--json",
                            str(js), "--quiet"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(js.read_text())["results"]) == 16
    try:
        clip = fetch("carphone_pristine.mp4")
    except FetchError as e:
        pytest.skip(f"no test clip: {e}")
    log = tmp_path / "s.json"
    res = r.invoke(_app(), ["stream", "--model", str(tiny_fp_model[1]), "--source", str(clip), "--no-display",
                            "--json", str(log), "--max-frames", "5"])
    assert res.exit_code == 0, res.output
    s = json.loads(log.read_text())
    assert s["processed"] == 5 and len(s["frames"]) == 5 and s["fps"] > 0
    assert {"face_ms", "score_ms", "total_ms"} <= set(s["latency_ms"])
