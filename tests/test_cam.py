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
    "arch,size", [("vgg11", 224), ("resnet18", 224), ("simple", 224), ("simpler", 160)]
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


def test_no_parameter_grad_and_no_backward_through_trunk():
    torch.manual_seed(1)
    model = build_model("resnet18", num_classes=2, input_size=64)
    trunk_backward_calls = []
    hooks = [
        m.register_full_backward_hook(lambda *a: trunk_backward_calls.append(1))
        for m in model.features.modules()
        if not list(m.children())
    ]
    head_backward_calls = []
    last = model.head[-1]
    hooks.append(last.register_full_backward_hook(lambda *a: head_backward_calls.append(1)))
    try:
        grad_cam(model, torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 1]))
    finally:
        for h in hooks:
            h.remove()
    assert all(p.grad is None for p in model.parameters())
    assert trunk_backward_calls == []
    assert head_backward_calls  # the gradient did flow through the head
    assert model.training  # mode restored after the eval-mode computation


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
