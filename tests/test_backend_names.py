"""One backend vocabulary (torch, onnxruntime, litert, openvino, auto) for every command; old spellings stay
accepted as aliases."""

import pytest
from typer.testing import CliRunner

from fakelite.cli import app
from fakelite.deploy.backends import CHOICES, UnknownBackend, canonical

runner = CliRunner()


@pytest.mark.parametrize(("given", "want"), [("onnx", "onnxruntime"), ("ORT", "onnxruntime"), ("tflite", "litert"),
                                             ("pytorch", "torch"), ("openvino", "openvino"), ("auto", "auto")])
def test_aliases_resolve(given, want):
    assert canonical(given) == want


def test_unknown_backend_lists_the_vocabulary():
    with pytest.raises(UnknownBackend) as ei:
        canonical("gpu")
    assert all(c in str(ei.value) for c in CHOICES) and "\n" not in str(ei.value)


def test_commands_share_the_vocabulary(tiny_fp_model, tiny_data):
    for cmd in ("detect", "stream", "serve"):
        h = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "250"}).output
        assert "torch | onnxruntime | litert | openvino" in h, cmd
    img = sorted((tiny_data / "test" / "gen_a" / "1_fake").glob("*.png"))[0]
    ok = runner.invoke(app, ["detect", str(img), "--model", str(tiny_fp_model[1]), "--backend", "pytorch", "--quiet"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["detect", str(img), "--model", str(tiny_fp_model[1]), "--backend", "gpu"])
    assert bad.exit_code == 2 and "onnxruntime" in bad.output
