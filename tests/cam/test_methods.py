"""CAM methods at named layers: hand-computed cases, and pytorch-grad-cam as reference."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from citylens.cam import GRADIENT_METHODS, METHODS, explain_batch
from citylens.models import build_model
from citylens.models.base import CityNet

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from cam_methods import pytorch_grad_cam_maps  # noqa: E402  (the bench races it)

# A layer of K = 2 channels on a 2 × 2 grid, and the gradient of city 0's logit there.
A1, A2 = [[1.0, 2.0], [1.0, 1.0]], [[0.0, 1.0], [3.0, 2.0]]
G1, G2 = [[1.0, 0.0], [2.0, -1.0]], [[-1.0, 1.0], [0.0, 1.0]]


def _tiny() -> tuple[CityNet, torch.Tensor]:
    """A CityNet whose layer activations are the input's first two channels and whose
    city-0 logit is Σ G ∘ A, so ∂y⁰/∂A = G exactly."""
    pick = nn.Conv2d(3, 2, 1, bias=False)
    linear = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        pick.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])[:, :, None, None])
        linear.weight.copy_(torch.stack([torch.tensor([G1, G2]).flatten(), torch.ones(8)]))
    model = CityNet("tiny", nn.Sequential(pick), nn.Sequential(nn.Flatten(), linear), 2, 2)
    x = torch.tensor([A1, A2, [[5.0, 5.0], [5.0, 5.0]]])[None]
    return model, x


def _by_hand() -> dict[str, np.ndarray]:
    a1, a2 = np.array(A1), np.array(A2)
    # Score-CAM: channel maps min-max normalised (A1 → [[0,1],[0,0]], A2 → A2 / 3) mask
    # the input; city 0's logit of each masked input is then 1 and 3
    score = np.exp([1.0, 3.0]) / np.exp([1.0, 3.0]).sum()
    return {
        "gradcam": 0.5 * a1 + 0.25 * a2,  # α = mean of G1, G2
        # a = g² / (2g² + (Σ A) g³): 1/7 at G1's 1, 1/12 at its 2; 1/8 at G2's 1s
        "gradcam++": (1 / 7 + 2 / 12) * a1 + (2 / 8) * a2,
        "hirescam": np.array([[1.0, 1.0], [2.0, 1.0]]),  # G1∘A1 + G2∘A2, then ReLU
        "layercam": np.array([[1.0, 1.0], [2.0, 2.0]]),  # ReLU(G1)∘A1 + ReLU(G2)∘A2
        "xgradcam": (2 / 5) * a1 + (3 / 6) * a2,  # w = Σ G∘A / Σ A
        "scorecam": score[0] * a1 + score[1] * a2,
    }


@pytest.mark.parametrize("method", METHODS)
def test_each_method_on_a_hand_computed_layer(method):
    model, x = _tiny()
    got = explain_batch(model, x, torch.tensor([0]), method=method)
    want = _by_hand()[method]
    np.testing.assert_allclose(got.cam[0].numpy(), want, rtol=1e-5, atol=1e-6)
    lo, hi = want.min(), want.max()
    np.testing.assert_allclose(got.mask[0].numpy(), (want - lo) / (hi - lo), atol=1e-5)
    assert got.target.tolist() == [0] and math.isclose(float(got.probs.sum()), 1.0, rel_tol=1e-6)


_SIZES = {"vgg11": 64, "resnet18": 64, "simple": 96, "simpler": 96}


def _model(arch: str):
    torch.manual_seed(3)
    model = build_model(arch, num_classes=3, input_size=_SIZES[arch]).eval()
    x = torch.randn(2, 3, _SIZES[arch], _SIZES[arch])
    return model, x, torch.tensor([2, 0])


def _layers():
    return [
        (arch, layer)
        for arch in _SIZES
        for layer in build_model(arch, num_classes=2, input_size=_SIZES[arch]).layers
    ]


@pytest.mark.parametrize("arch,layer", _layers())
def test_gradient_methods_equal_pytorch_grad_cam_at_every_named_layer(arch, layer):
    model, x, targets = _model(arch)
    ours = {m: explain_batch(model, x, targets, method=m, layer=layer) for m in GRADIENT_METHODS}
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient, ever
    for method, got in ours.items():
        theirs = pytorch_grad_cam_maps(model, x, targets, method, layer)
        assert got.mask.shape[1:] == model.map_sizes()[layer]
        assert not got.empty.all(), (method, "a degenerate case tests nothing")
        np.testing.assert_allclose(got.mask.numpy(), theirs, atol=1e-5, err_msg=method)


@pytest.mark.parametrize(
    "arch,layer",
    [
        ("simpler", "conv3"),
        ("simpler", "conv2"),
        ("simple", "conv4"),
        pytest.param("resnet18", "layer4", marks=pytest.mark.slow),
        pytest.param("vgg11", "block5", marks=pytest.mark.slow),
    ],
)
def test_score_cam_equals_pytorch_grad_cam(arch, layer):
    model, x, targets = _model(arch)
    ours = explain_batch(model, x, targets, method="scorecam", layer=layer)
    theirs = pytorch_grad_cam_maps(model, x, targets, "scorecam", layer)
    assert not ours.empty.all()
    np.testing.assert_allclose(ours.mask.numpy(), theirs, atol=1e-5)


def test_the_papers_layer_is_the_default_and_unknown_names_are_refused_naming_the_choices():
    model, x, targets = _model("resnet18")
    default = explain_batch(model, x, targets)
    named = explain_batch(model, x, targets, method="gradcam", layer="layer4")
    assert torch.equal(default.mask, named.mask) and model.target_layer == "layer4"
    with pytest.raises(ValueError, match="layer3, layer4"):
        explain_batch(model, x, targets, layer="layer2")
    with pytest.raises(ValueError, match="gradcam\\+\\+.*scorecam"):
        explain_batch(model, x, targets, method="eigencam")


def test_every_architecture_names_two_layers_the_earlier_twice_as_fine_or_finer():
    want = {
        "vgg11": {"block4": (28, 28), "block5": (14, 14)},
        "resnet18": {"layer3": (14, 14), "layer4": (7, 7)},
        "simple": {"conv3": (48, 48), "conv4": (18, 18)},
        "simpler": {"conv2": (100, 100), "conv3": (42, 42)},
    }
    for arch, sizes in want.items():
        model = build_model(arch, num_classes=2, input_size=224).eval()  # no dropout
        assert model.map_sizes() == sizes
        assert model.cam_size == sizes[model.target_layer]  # the paper's layer is last
        trunk, rest = model.split(list(sizes)[0])
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            torch.testing.assert_close(rest(trunk(x)), model(x))


@pytest.mark.parametrize(("method", "layer"), [("gradcam++", "layer3"), ("hirescam", "layer4")])
def test_precision_check_compares_the_studys_own_method_and_layer(method, layer):
    """explain.precision's first-batch check judges the explanations the study makes."""
    from citylens.cam import mask_difference

    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, input_size=64).eval()
    x = torch.randn(4, 3, 64, 64)
    targets = torch.tensor([0, 1, 2, 1])
    ref = explain_batch(model, x, targets, method, layer).mask
    low = explain_batch(model, x, targets, method, layer, "bf16").mask
    assert ref.shape == low.shape == (4, *model.map_sizes()[layer])
    expected = float((low - ref).abs().mean())
    assert expected > 0  # bf16 really changed this method's masks
    assert mask_difference(model, x, targets, "bf16", method, layer) == pytest.approx(expected)
    paper = mask_difference(model, x, targets, "bf16")  # Grad-CAM at the paper's layer
    assert paper != pytest.approx(expected)
    assert mask_difference(model, x, targets, "fp32", method, layer) == 0.0
