"""Folding VGG11's upsampling average pool into its first linear layer changes nothing but
the cost: the same logits and gradients, a narrower layer; other heads are left alone."""

from __future__ import annotations

import pytest
import torch

from citylens.cam import explain_batch
from citylens.cam.fold import fold_average_pool
from citylens.models import build_model


def _acts(model, layer, size=96):
    torch.manual_seed(0)
    x = torch.randn(3, 3, size, size)
    trunk, rest = model.split(layer)
    with torch.no_grad():
        return trunk(x), rest


@pytest.mark.parametrize("layer", ["block5", "block4"])
def test_vggs_folded_head_gives_the_same_logits_and_gradients(layer):
    torch.manual_seed(1)
    model = build_model("vgg11", 3, 96).eval()
    acts, rest = _acts(model, layer)
    folded = fold_average_pool(rest, acts)
    widths = [m.in_features for m in folded.modules() if isinstance(m, torch.nn.Linear)]
    assert widths[0] == 512 * 3 * 3 < 25_088  # the 3×3 map, not its 7×7 copies
    a1, a2 = acts.clone().requires_grad_(True), acts.clone().requires_grad_(True)
    y1, y2 = rest(a1), folded(a2)
    torch.testing.assert_close(y2, y1, rtol=1e-4, atol=1e-5)
    (g1,) = torch.autograd.grad(y1[:, 1].sum(), a1)
    (g2,) = torch.autograd.grad(y2[:, 1].sum(), a2)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-7)


def test_a_shrinking_pool_and_a_head_without_one_are_left_as_they_are():
    for arch in ("resnet18", "simpler"):
        model = build_model(arch, 3, 96).eval()
        acts, rest = _acts(model, None)
        assert fold_average_pool(rest, acts) is rest


def test_the_fold_follows_changed_weights():
    torch.manual_seed(2)
    model = build_model("vgg11", 3, 96).eval()
    x = torch.randn(2, 3, 96, 96)
    before = explain_batch(model, x, torch.tensor([0, 1]), "hirescam")
    with torch.no_grad():
        model.head[-1][0].weight.mul_(-1.0)  # the first linear layer, changed in place
    after = explain_batch(model, x, torch.tensor([0, 1]), "hirescam")
    # the unfolded computation of the changed model, by autograd through the plain head
    trunk, rest = model.split(None)
    with torch.no_grad():
        acts = trunk(x)
    a = acts.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(rest(a).gather(1, torch.tensor([[0], [1]])).sum(), a)
    want = torch.relu((g * acts).sum(1))
    torch.testing.assert_close(after.cam, want, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(after.cam, before.cam)
