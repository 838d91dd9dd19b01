"""The .fakelite artifact: bit-exact round trips, metadata, refusal of bad files, no pickle."""

import json
import pickle

import pytest
import torch

import fakelite
from fakelite import artifact
from fakelite.artifact import ArtifactError


@pytest.mark.parametrize("name,kw", [("npr_resnet23", {}), ("npr_resnet23", {"input": "rgb"}),
                                     ("mobilenetv3_small", {})])
def test_round_trip_bit_exact(tmp_path, name, kw):
    torch.manual_seed(0)
    m = fakelite.create_model(name, **kw).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
    p = fakelite.save(m, tmp_path / "m.fakelite", threshold=0.37, provenance={"seed": 3})
    m2 = fakelite.load(p)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    assert m2.threshold == pytest.approx(0.37) and m2.provenance["seed"] == 3
    assert m2.arch_kwargs == m.arch_kwargs and m2.preprocess == m.preprocess
    # identical bytes for an identical model (deterministic serialisation)
    assert artifact.to_bytes(m, threshold=0.37, provenance={"seed": 3}) == p.read_bytes()


def test_header_contents(tmp_path):
    m = fakelite.create_model("npr_resnet23")
    p = fakelite.save(m, tmp_path / "m.fakelite")
    header, tensors = artifact.read(p)
    assert header["format_version"] == artifact.FORMAT_VERSION
    assert header["arch"] == {"name": "npr_resnet23", "kwargs": {"input": "npr"}}
    assert header["preprocess"]["npr"] is True and header["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert len(header["content_hash"]) == 64 and header["quant"] is None


def _rewrite_header(p, fn):
    data = p.read_bytes()
    n = int.from_bytes(data[:8], "little")
    h = json.loads(data[8 : 8 + n])
    meta = json.loads(h["__metadata__"]["fakelite"])
    fn(meta)
    h["__metadata__"]["fakelite"] = json.dumps(meta)
    raw = json.dumps(h).encode()
    raw += b" " * (-len(raw) % 8)
    # keep tensor offsets: pad/trim only works if sizes are equal; rebuild the whole file instead
    return len(raw).to_bytes(8, "little") + raw + data[8 + n :]


def test_refuses_unknown_version(tmp_path):
    p = fakelite.save(fakelite.create_model("npr_resnet23"), tmp_path / "m.fakelite")
    p.write_bytes(_rewrite_header(p, lambda m: m.update(format_version=99)))
    with pytest.raises(ArtifactError, match="unsupported format version 99"):
        fakelite.load(p)


def test_refuses_tampered_header(tmp_path):
    p = fakelite.save(fakelite.create_model("npr_resnet23"), tmp_path / "m.fakelite", threshold=0.5)
    p.write_bytes(_rewrite_header(p, lambda m: m.update(threshold=0.01)))
    with pytest.raises(ArtifactError, match="header hash mismatch"):
        fakelite.load(p)


def test_refuses_tampered_tensor(tmp_path):
    p = fakelite.save(fakelite.create_model("npr_resnet23"), tmp_path / "m.fakelite")
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        fakelite.load(p)


def test_refuses_truncated_and_foreign_files(tmp_path):
    p = fakelite.save(fakelite.create_model("npr_resnet23"), tmp_path / "m.fakelite")
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="not a valid .fakelite"):
        fakelite.load(p)
    q = tmp_path / "evil.fakelite"
    q.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ArtifactError, match="not a valid .fakelite"):
        fakelite.load(q)
    with pytest.raises(ArtifactError, match="no such model file"):
        fakelite.load(tmp_path / "missing.fakelite")


def test_mismatched_tensors_refused(tmp_path):
    from safetensors.torch import save_file

    m = fakelite.create_model("npr_resnet23")
    p = fakelite.save(m, tmp_path / "m.fakelite")
    header, tensors = artifact.read(p)
    header["arch"]["kwargs"] = {}
    header["arch"]["name"] = "resnet18"  # tensors of npr_resnet23 under a resnet18 header
    header["header_hash"] = artifact.header_hash(header)  # a consistent (re-signed) but wrong header
    save_file(tensors, str(tmp_path / "x.fakelite"), metadata={"fakelite": json.dumps(header)})
    with pytest.raises(ArtifactError, match="do not fit the architecture"):
        fakelite.load(tmp_path / "x.fakelite")


def test_codecs_register_themselves_and_quantized_packing_wins():
    """artifact.py imports no producer: quant and compress register their codecs (quant first), and a model that is
    both sparse and quantized is stored as low-bit codes, loads quantized and gives the same logits."""
    from fakelite.compress.prune import prune_unstructured
    from fakelite.quant import QuantConfig

    assert [c.name for c in artifact.codecs()] == ["quant", "sparse"]
    torch.manual_seed(0)
    m = fakelite.create_model("mobilenetv3_small").eval()
    prune_unstructured(m, 0.5)
    assert m.fakelite_sparse
    q = fakelite.quantize(m, QuantConfig(w_bits=4, a_bits=4, quantizer="lsq")).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        y = q(x)
    header, tensors = artifact.parse(artifact.to_bytes(q))
    assert header["quant"]["config"]["w_bits"] == 4 and "weights" in header["packing"]
    assert "sparse" not in header["packing"] and not any(k.endswith("::sparse_mask") for k in tensors)
    q2 = artifact.build(header, tensors)
    assert q2.fakelite_quant == header["quant"]
    with torch.no_grad():
        assert torch.equal(q2(x), y)
