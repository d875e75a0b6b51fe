import pytest
import torch

from citylens.cam import grad_cam, normalize_masks
from citylens.models import build_model


def reference_grad_cam(model, images, targets):
    """Textbook Grad-CAM: full forward and backward, a hook on the target layer."""
    model.eval()
    store = {}

    def hook(_module, _inputs, output):
        output.retain_grad()
        store["a"] = output

    handle = model.features.register_forward_hook(hook)
    try:
        x = images.clone().requires_grad_(True)
        logits = model(x)
        logits[torch.arange(len(targets)), targets].sum().backward()
    finally:
        handle.remove()
    a, g = store["a"].detach(), store["a"].grad
    weights = g.mean(dim=(2, 3))
    cam = torch.relu((weights[:, :, None, None] * a).sum(dim=1))
    d_short = cam * a.sum(dim=1)
    return cam, d_short, logits.detach()


@pytest.mark.parametrize(
    "arch,size",
    [
        ("vgg11", 224),
        ("vgg11", 256),  # 8 → 7 adaptive pooling, overlapping windows
        ("resnet18", 224),
        ("simple", 224),
        ("simpler", 160),
    ],
)
def test_grad_cam_equals_full_autograd_reference(arch, size):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, input_size=size)
    images = torch.randn(4, 3, size, size)
    targets = torch.tensor([0, 2, 1, 0])  # mixed targets in one batch

    ref_cam, ref_short, ref_logits = reference_grad_cam(model, images, targets)
    for p in model.parameters():
        p.grad = None
    out = grad_cam(model, images, targets)

    scale = ref_cam.abs().max().clamp_min(1e-12)
    assert out.cam.shape == (4, *model.cam_size)
    torch.testing.assert_close(out.cam / scale, ref_cam / scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.d_cam, ref_cam.flatten(1), atol=1e-5 * scale, rtol=1e-4)
    short_scale = ref_short.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(
        out.d_short / short_scale, ref_short.flatten(1) / short_scale, atol=1e-5, rtol=0
    )
    ref_mask, ref_empty = normalize_masks(ref_cam)
    torch.testing.assert_close(out.mask, ref_mask, atol=1e-5, rtol=0)
    assert torch.equal(out.empty, ref_empty)
    assert torch.equal(out.target, targets)
    assert torch.equal(out.pred, ref_logits.argmax(1))
    torch.testing.assert_close(out.probs, torch.softmax(ref_logits, 1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["resnet18", "simple"])
def test_no_parameter_grad_and_no_backward_through_trunk(arch):
    torch.manual_seed(1)
    model = build_model(arch, num_classes=2, input_size=96)
    trunk_backward_calls = []
    hooks = [
        m.register_full_backward_hook(lambda *a: trunk_backward_calls.append(1))
        for m in model.features.modules()
        if not list(m.children())
    ]
    try:
        grad_cam(model, torch.randn(3, 3, 96, 96), torch.tensor([0, 1, 1]))
    finally:
        for h in hooks:
            h.remove()
    assert all(p.grad is None for p in model.parameters())
    assert trunk_backward_calls == []
    assert model.training  # mode restored after the eval-mode computation


def test_pooled_head_skips_the_first_linear_layers_input_gradient():
    """Simpler: the gradient flows through the head's tail but never through FC-4096."""
    torch.manual_seed(4)
    model = build_model("simpler", num_classes=2, input_size=96)
    for m in model.head.modules():  # backward hooks refuse in-place ops after a module
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    calls = {i: [] for i in range(len(linears))}
    hooks = [
        m.register_full_backward_hook(lambda *a, i=i: calls[i].append(1))
        for i, m in enumerate(linears)
    ]
    try:
        grad_cam(model, torch.randn(2, 3, 96, 96), torch.tensor([0, 1]))
    finally:
        for h in hooks:
            h.remove()
    assert calls[0] == []  # no (B, 4096) @ (4096, K·h'·w') product
    assert calls[1] and calls[2]  # the rest of the head ran backward


def test_pooled_weight_follows_weight_updates():
    torch.manual_seed(5)
    model = build_model("simple", num_classes=3, input_size=96)
    images, targets = torch.randn(3, 3, 96, 96), torch.tensor([2, 0, 1])
    grad_cam(model, images, targets)  # fills the cache
    with torch.no_grad():  # as an optimiser step would, in place
        model.head[2].weight[:, :500].mul_(-3.0)
    ref_cam, _, _ = reference_grad_cam(model, images, targets)
    out = grad_cam(model, images, targets)
    scale = ref_cam.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(out.cam / scale, ref_cam / scale, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "pool,size,keeps",
    [
        (torch.nn.MaxPool2d(2), 42, True),
        (torch.nn.MaxPool2d(3, stride=2, padding=1), 15, True),  # overlapping windows
        (torch.nn.AvgPool2d(2), 14, True),
        (torch.nn.AvgPool2d(3, stride=2), 15, True),  # overlapping windows
        (torch.nn.AvgPool2d(3, stride=2, padding=1), 15, False),  # divisor counts padding
        (torch.nn.AvgPool2d(2, ceil_mode=True), 15, True),  # last window covers one input
        (torch.nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), 15, True),
        (torch.nn.AvgPool2d(2, padding=1, ceil_mode=True), 15, False),
        (torch.nn.AvgPool2d(2, divisor_override=3), 14, False),
        (torch.nn.AdaptiveAvgPool2d(7), 14, True),
        (torch.nn.AdaptiveAvgPool2d(7), 15, True),  # overlapping windows
        (torch.nn.AdaptiveAvgPool2d(1), 9, True),
    ],
)
def test_keeps_gradient_sum_matches_autograd(pool, size, keeps):
    """The pooled path's premise, checked against autograd for each pooling it accepts."""
    from citylens.cam.gradcam import _keeps_gradient_sum

    torch.manual_seed(6)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    y = pool(x)
    g_out = torch.randn_like(y)
    (g_in,) = torch.autograd.grad(y, x, g_out)
    sums_equal = torch.allclose(g_in.sum(dim=(2, 3)), g_out.sum(dim=(2, 3)), atol=1e-5)
    assert _keeps_gradient_sum(pool, (size, size)) is keeps
    assert sums_equal is keeps


def test_predicted_class_is_the_default_target():
    torch.manual_seed(2)
    model = build_model("simple", num_classes=2, input_size=96)
    out = grad_cam(model, torch.randn(5, 3, 96, 96))
    assert torch.equal(out.target, out.pred)


def test_empty_cam_is_zeros_and_flagged_never_nan():
    cam = torch.zeros(3, 4, 4)
    cam[1, 2, 3] = 2.0  # one peak
    cam[2] = 0.5  # constant positive: every location equally important
    mask, empty = normalize_masks(cam)
    assert empty.tolist() == [True, False, False]
    assert torch.equal(mask[0], torch.zeros(4, 4))
    assert mask[1, 2, 3] == 1.0 and mask[1].sum() == 1.0
    assert torch.equal(mask[2], torch.ones(4, 4))
    assert not torch.isnan(mask).any()


def test_grad_cam_all_negative_evidence_is_empty():
    # A head whose gradient is negative everywhere: ReLU leaves nothing.
    torch.manual_seed(3)
    model = build_model("simple", num_classes=2, input_size=96)
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
    out = grad_cam(model, torch.randn(2, 3, 96, 96), torch.tensor([0, 1]))
    assert out.empty.all()
    assert torch.count_nonzero(out.mask) == 0
    assert not torch.isnan(out.mask).any()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_only_the_trunk_in_it(precision):
    """The trunk runs under autocast; head, gradient and map are fp32 from its output."""
    from citylens.cam import PRECISIONS, mask_difference

    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, input_size=64).eval()
    x = torch.randn(4, 3, 64, 64)
    targets = torch.tensor([0, 1, 2, 1])
    out = grad_cam(model, x, targets, precision)
    assert out.mask.dtype == torch.float32 and out.probs.dtype == torch.float32
    with torch.no_grad(), torch.autocast("cpu", PRECISIONS[precision]):
        acts = model.features(x)
    assert acts.dtype == PRECISIONS[precision]  # autocast really changed the trunk
    # independent reference: plain autograd through the head from the reduced activations
    a = acts.float().requires_grad_(True)
    score = model.head(a).gather(1, targets[:, None]).sum()
    (g,) = torch.autograd.grad(score, a)
    cam = torch.relu((g.mean(dim=(2, 3))[:, :, None, None] * a.detach()).sum(1))
    torch.testing.assert_close(out.cam, cam, rtol=1e-4, atol=1e-5)
    ref = grad_cam(model, x, targets)
    assert mask_difference(model, x, targets, precision) == pytest.approx(
        float((out.mask - ref.mask).abs().mean())
    )
    assert mask_difference(model, x, targets, "fp32") == 0.0
    with pytest.raises(ValueError, match="precision"):
        grad_cam(model, x, targets, "int8")


def test_head_without_sum_keeping_pooling_takes_autograd_path():
    """A padded average pooling before the FC layer: the pooled shortcut would be wrong."""
    from torch import nn

    from citylens.cam.gradcam import _pooled_head_gradient
    from citylens.models.base import CityNet

    torch.manual_seed(7)
    features = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU())
    head = nn.Sequential(
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 32),
        nn.ReLU(inplace=True),
        nn.Linear(32, 3),
    )
    model = CityNet("padded", features, head, input_size=64, num_classes=3).eval()
    images, targets = torch.randn(3, 3, 64, 64), torch.tensor([1, 2, 0])
    with torch.no_grad():
        acts = model.features(images)
    assert _pooled_head_gradient(model.head, acts, targets) is None
    ref_cam, ref_short, _ = reference_grad_cam(model, images, targets)
    out = grad_cam(model, images, targets)
    scale = ref_cam.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(out.cam / scale, ref_cam / scale, atol=1e-5, rtol=0)
