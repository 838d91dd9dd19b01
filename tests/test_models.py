"""Models: exact NPR values, exact parameter counts, odd sizes, registry behaviour."""

import pytest
import torch

from fakelite.models import create_model, list_models
from fakelite.models.npr_resnet import NPR_SCALE, npr

# parameter counts with a one-logit head; the ResNet/MobileNet numbers equal torchvision's (1000 classes)
# minus the classifier rows removed (e.g. resnet50: 25,557,032 − 2048·999 − 999)
EXPECTED_PARAMS = {
    "npr_resnet23": 1_437_761,
    "resnet18": 11_177_025,
    "resnet34": 21_285_185,
    "resnet50": 23_510_081,
    "mobilenetv3_small": 1_518_881,
    "mobilenetv3_large": 4_203_313,
}


def test_registry_lists_all():
    assert set(EXPECTED_PARAMS) <= set(list_models())


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    m = create_model(name)
    assert sum(p.numel() for p in m.parameters()) == EXPECTED_PARAMS[name]


def test_npr_of_ramp():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[0, 1, 0, 1], [4, 5, 4, 5], [0, 1, 0, 1], [4, 5, 4, 5]], dtype=torch.float32)
    assert torch.equal(npr(x)[0, 0], expected)
    # a quarter of NPR values are exactly zero (the anchors of each 2×2 cell)
    r = npr(torch.randn(2, 3, 8, 10))
    assert torch.all(r[..., ::2, ::2] == 0)


def test_npr_layer_scales_by_two_thirds():
    m = create_model("npr_resnet23")
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(m.npr(x), npr(x) * NPR_SCALE)
    assert NPR_SCALE == pytest.approx(2 / 3)


@pytest.mark.parametrize("h,w", [(33, 33), (65, 64), (31, 47)])
def test_odd_sizes_work(h, w):
    m = create_model("npr_resnet23").eval()
    y = m(torch.randn(1, 3, h, w))
    assert y.shape == (1, 1)
    assert npr(torch.randn(1, 3, h, w)).shape[-2:] == (h - h % 2, w - w % 2)


def test_rgb_ablation_and_preprocess():
    m = create_model("npr_resnet23", input="rgb")
    assert m.preprocess.npr is False and isinstance(m.npr, torch.nn.Identity)
    assert create_model("npr_resnet23").preprocess.npr is True
    assert m.arch_kwargs == {"input": "rgb"}


def test_unknown_model_message():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        create_model("nope")


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small", "mobilenetv3_large"])
def test_forward_shapes(name):
    m = create_model(name).eval()
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 1)
    assert m.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, m.feature_dim)


def test_numpy_npr_matches_model_npr():
    # the features/pictures NPR (numpy, HWC) is the model's NPR (torch, NCHW), odd sides trimmed the same way
    import numpy as np

    from fakelite.data.transforms import npr_image

    img = np.random.default_rng(0).integers(0, 256, (33, 46, 3), dtype=np.uint8)
    ref = npr(torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.array_equal(npr_image(img), ref)
