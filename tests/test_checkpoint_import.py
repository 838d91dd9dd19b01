"""`fakelite import`: public checkpoint layouts (NPR, CNNDetection, torchvision ResNet) → .fakelite, bit-identical
logits, and refusal of files that would need arbitrary unpickling."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_bn
from torch import nn
from typer.testing import CliRunner

import fakelite
from fakelite.cli import app
from fakelite.models import create_model
from fakelite.models.checkpoint_import import CheckpointError, import_checkpoint

runner = CliRunner()


# --- the public code's networks, written as their repositories write them (module names and forward order) ---

class _TVBasic(nn.Module):  # torchvision.models.resnet.BasicBlock
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class _TVBottleneck(nn.Module):  # torchvision.models.resnet.Bottleneck (stride on the 3×3, "v1.5")
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class PublicResNet(nn.Module):
    """torchvision's ResNet (num_classes=1), or with `npr=True` NPR's networks/resnet.py (3×3 stem, layer1-2, fc1)."""

    def __init__(self, block, layers, npr=False):
        super().__init__()
        self.inplanes = 64
        self.is_npr = npr
        self.conv1 = (nn.Conv2d(3, 64, 3, 2, 1, bias=False) if npr else nn.Conv2d(3, 64, 7, 2, 3, bias=False))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, n in enumerate(layers):
            setattr(self, f"layer{i + 1}", self._make_layer(block, 64 * 2**i, n, 1 if i == 0 else 2))
        self.n_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        if npr:
            self.fc1 = nn.Linear(512, 1)
        else:
            self.fc = nn.Linear(512 * block.expansion, 1)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @staticmethod
    def interpolate(img, factor):
        return F.interpolate(F.interpolate(img, scale_factor=factor, mode="nearest", recompute_scale_factor=True),
                             scale_factor=1 / factor, mode="nearest", recompute_scale_factor=True)

    def forward(self, x):
        if self.is_npr:
            x = (x - self.interpolate(x, 0.5)) * 2.0 / 3.0
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc1(x) if self.is_npr else self.fc(x)


def _source(arch: str, input: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = create_model(arch, input=input)
    randomize_bn(m, seed)
    with torch.no_grad():
        m.fc.bias.fill_(0.1)
    return m.eval()


def _npr_state(m: nn.Module) -> dict[str, torch.Tensor]:
    """Our npr_resnet23's state dict under NPR's official key names (head `fc1`)."""
    return {("fc1." + k[3:] if k.startswith("fc.") else k): v.clone() for k, v in m.state_dict().items()}


def _x(n=3, size=64, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _import_cli(ckpt, fmt, out, *extra):
    r = runner.invoke(app, ["import", str(ckpt), "--format", fmt, "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    return fakelite.load(out), r.output


def test_npr_official_layout_real_size_round_trip(tmp_path):
    src = _source("npr_resnet23", "npr")
    sd = _npr_state(src)
    assert len(sd) == 146 and sum(v.numel() for k, v in sd.items()
                                  if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) == 1_437_761
    assert {"fc1.weight", "fc1.bias", "layer1.0.downsample.0.weight", "layer2.3.bn3.running_var"} <= set(sd)
    assert not any(k.startswith(("layer3", "fc.")) for k in sd)
    ckpt = tmp_path / "NPR.pth"
    torch.save(sd, ckpt)
    model, out = _import_cli(ckpt, "npr", tmp_path / "npr.fakelite")
    assert "1,437,761 parameters" in out and "146 tensors" in out
    x = _x()
    with torch.no_grad():
        assert torch.equal(model(x), src(x))  # bit-identical
        assert torch.equal(model(x[..., :63, :63]), src(x[..., :63, :63]))  # odd size: trimmed the same way
    imp = model.provenance["imported"]
    assert imp["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert imp["format"] == "npr" and imp["arch"] == "npr_resnet23" and imp["params"] == 1_437_761
    assert imp["renamed"] == {"fc1.weight": "fc.weight", "fc1.bias": "fc.bias"}
    assert model.preprocess.npr and model.preprocess.crop == 224 and model.preprocess.resize is None
    # NPR's own network (networks/resnet.py) loads the same file strictly; its `* 2.0 / 3.0` rounds differently
    # from our `* (2/3)` in the last bit of the stem's input, so logits agree to float precision, not bit for bit
    ref = PublicResNet(_TVBottleneck, (3, 4), npr=True).eval()
    ref.load_state_dict(torch.load(ckpt, weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("wrap", ["model", "state_dict", "module", "model+module+optimizer"])
def test_npr_community_wrappers(tmp_path, wrap):
    src = _source("npr_resnet23", "npr", seed=2)
    sd = _npr_state(src)
    if "module" in wrap:
        sd = {"module." + k: v for k, v in sd.items()}
    obj = {"model": sd} if wrap.startswith("model") else {"state_dict": sd} if wrap == "state_dict" else sd
    if "optimizer" in wrap:
        obj = {**obj, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "total_steps": 1000}
    ckpt = tmp_path / "w.pth"
    torch.save(obj, ckpt)
    model, report = import_checkpoint(ckpt, "npr")
    x = _x(2, 32)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))
    assert report["prefix_stripped"] == ("module." if "module" in wrap else None)


def test_cnndetection_layout(tmp_path):
    src = _source("resnet50", "rgb", seed=3)
    ckpt = tmp_path / "blur_jpg_prob0.5.pth"
    torch.save({"model": src.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "total_steps": 7}, ckpt)
    model, out = _import_cli(ckpt, "cnndetection", tmp_path / "cnnd.fakelite")
    assert "23,510,081 parameters" in out
    x = _x(2, 64)
    ref = PublicResNet(_TVBottleneck, (3, 4, 6, 3)).eval()
    ref.load_state_dict(torch.load(ckpt, weights_only=True)["model"], strict=True)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))
        assert torch.equal(model(x), ref(x))  # torchvision's own forward order gives the same bits
    p = model.preprocess
    assert (p.npr, p.crop, p.resize, p.mean) == (False, 224, None, (0.485, 0.456, 0.406))
    assert model.provenance["imported"]["wrapper"] == ["model"]
    assert "no_resize" in model.provenance["imported"]["preprocess_policy"]
    # the training-time policy on request: short side to 256, then the centre crop
    model2, _ = _import_cli(ckpt, "cnndetection", tmp_path / "c2.fakelite", "--resize", "256")
    assert model2.preprocess.resize == 256 and "256" in model2.provenance["imported"]["preprocess_policy"]


@pytest.mark.parametrize("arch,block,layers", [("resnet18", _TVBasic, (2, 2, 2, 2)),
                                               ("resnet34", _TVBasic, (3, 4, 6, 3))])
def test_torchvision_resnet_arch_inferred(tmp_path, arch, block, layers):
    ref = PublicResNet(block, layers).eval()
    randomize_bn(ref, 4)
    ckpt = tmp_path / f"{arch}.pth"
    torch.save(ref.state_dict(), ckpt)
    model, report = import_checkpoint(ckpt, "torchvision-resnet")
    assert report["arch"] == arch and model.arch_kwargs == {"input": "rgb"}
    x = _x(2, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_safetensors_checkpoint_and_old_checkpoints_without_bn_counters(tmp_path):
    from safetensors.torch import save_file

    src = _source("resnet18", "rgb", seed=5)
    sd = {k: v.half() if v.is_floating_point() else v for k, v in src.state_dict().items()
          if not k.endswith("num_batches_tracked")}  # pre-0.4.1 checkpoint, stored in fp16
    ckpt = tmp_path / "r18.safetensors"
    save_file(sd, str(ckpt))
    model, report = import_checkpoint(ckpt, "torchvision-resnet", "resnet18")
    assert len(report["filled_buffers"]) == 20 and all(k.endswith("num_batches_tracked") for k in report["filled_buffers"])
    ref = create_model("resnet18", input="rgb").eval()
    ref.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    x = _x(2, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


class _Payload:
    """Unpickling this runs exec(): it writes `target`."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, how):
    control, target = tmp_path / "control_ran", tmp_path / "import_ran"
    for path, dest in ((tmp_path / "control.pth", control), (tmp_path / "evil.pth", target)):
        obj = {"model": {"conv1.weight": torch.zeros(1), "x": _Payload(dest)}}
        if how == "torch.save":
            torch.save(obj, path)
        else:
            path.write_bytes(pickle.dumps(obj))
    # the payload is real: an unsafe load (in a child process) runs it
    code = ("import torch, pickle, sys; p = sys.argv[1]; "
            "torch.load(p, weights_only=False) if sys.argv[2] == 'torch.save' else pickle.load(open(p, 'rb'))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "control.pth"), how], check=False,
                   capture_output=True, cwd=str(tmp_path), env={"PYTHONPATH": ":".join(sys.path)})
    assert control.exists()
    r = runner.invoke(app, ["import", str(tmp_path / "evil.pth"), "--format", "npr", "--out", str(tmp_path / "e.fakelite")])
    assert r.exit_code == 2
    assert not target.exists()
    assert not (tmp_path / "e.fakelite").exists()
    err = r.output.strip()
    assert len(err.splitlines()) == 1 and "evil.pth" in err
    if how == "torch.save":
        assert "refused" in err and "exec" in err


def test_wrong_layouts_are_named(tmp_path):
    src = _source("npr_resnet23", "npr")
    sd = _npr_state(src)
    ckpt = tmp_path / "a.pth"
    # a 2-class head, a missing conv and a stray key
    bad = dict(sd)
    bad["fc1.weight"] = torch.zeros(2, 512)
    bad["fc1.bias"] = torch.zeros(2)
    del bad["layer2.3.conv3.weight"]
    bad["extra.weight"] = torch.zeros(3)
    torch.save(bad, ckpt)
    with pytest.raises(CheckpointError) as e:
        import_checkpoint(ckpt, "npr")
    msg = str(e.value)
    assert "\n" not in msg and "a.pth" in msg
    assert "missing 1 (layer2.3.conv3.weight)" in msg and "unexpected 1 (extra.weight)" in msg
    assert "fc.weight: [2, 512] vs [1, 512]" in msg and "2 outputs" in msg
    # an NPR file offered as torchvision: named keys plus a hint
    torch.save(sd, ckpt)
    with pytest.raises(CheckpointError, match="try --format npr|not a torchvision"):
        import_checkpoint(ckpt, "torchvision-resnet")
    with pytest.raises(CheckpointError, match="fc1"):
        import_checkpoint(ckpt, "torchvision-resnet", "resnet50")
    # not a checkpoint at all / no tensors / missing file
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="junk.pth: not a PyTorch checkpoint"):
        import_checkpoint(tmp_path / "junk.pth", "npr")
    torch.save({"epoch": 3, "notes": "x"}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no state dict of tensors"):
        import_checkpoint(tmp_path / "empty.pth", "npr")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        import_checkpoint(tmp_path / "nope.pth", "npr")
    r = runner.invoke(app, ["import", str(ckpt), "--format", "timm", "--out", str(tmp_path / "o.fakelite")])
    assert r.exit_code == 2 and "unknown --format" in r.output


def test_imported_model_scores_images_like_any_model(tmp_path, tiny_data):
    """An imported NPR checkpoint goes through evaluation and the Detector like a trained model."""
    from fakelite.deploy.runtime import Detector
    from fakelite.eval.evaluate import evaluate

    src = _source("npr_resnet23", "npr", seed=6)
    torch.save(_npr_state(src), tmp_path / "n.pth")
    _import_cli(tmp_path / "n.pth", "npr", tmp_path / "n.fakelite", "--crop", "32")
    res = evaluate(fakelite.load(tmp_path / "n.fakelite"), tiny_data / "test", quiet=True)
    assert set(res["sets"]) == {"gen_a", "gen_b"} and res["sets"]["gen_a"]["n"] == 16
    det = Detector.load(tmp_path / "n.fakelite")
    img = next((tiny_data / "test" / "gen_a" / "1_fake").iterdir())
    assert det.predict(img).label in ("real", "fake")
