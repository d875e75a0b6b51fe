"""The causal check's core: objects, controls, ablation rows and deletion curves."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import scipy.ndimage as ndimage
import torch

from citylens.ablation import (
    ablate_objects,
    ablation_rows,
    control_masks,
    curve_area,
    deletion_curves,
    objects_to_remove,
    target_scores,
)
from citylens.fills import fill_mean
from citylens.tables import ABLATIONS


def _masks(b=3, h=24, w=20) -> torch.Tensor:
    m = torch.zeros(b, h, w, dtype=torch.bool)
    m[0, 3:9, 4:12] = True
    m[1, 10:20, 0:5] = True
    m[1, 2, 17] = True  # two parts
    m[2, 0, 0] = True
    return m


def test_a_control_has_the_objects_area_and_never_touches_it():
    m = _masks()
    big = torch.zeros(1, 24, 20, dtype=torch.bool)
    big[0, 2:22, 2:18] = True  # 2/3 of the image: no translation fits, a blob does not
    half = torch.zeros(1, 24, 20, dtype=torch.bool)
    half[0, :, :9] = True  # full height: only shifts to the right clear it
    whole = torch.ones(1, 24, 20, dtype=torch.bool)
    masks = torch.cat([m, big, half, whole])
    controls, ok = control_masks(masks, seed=3)
    assert ok.tolist() == [True, True, True, False, True, False]
    for i in np.flatnonzero(ok.numpy()):
        assert int(controls[i].sum()) == int(masks[i].sum())
        assert not (controls[i] & masks[i]).any()
    assert not controls[~ok].any()
    again, _ = control_masks(masks, seed=3)
    assert torch.equal(again, controls)  # deterministic
    other, _ = control_masks(masks, seed=4)
    assert not torch.equal(other, controls)


def test_a_control_blob_is_used_when_no_translation_fits():
    m = torch.zeros(1, 10, 10, dtype=torch.bool)
    m[0, 0, :] = True  # an L spanning the whole width and height: it cannot move
    m[0, :, 0] = True
    controls, ok = control_masks(m, seed=0)
    assert ok.item() and int(controls.sum()) == int(m.sum()) == 19
    assert not (controls & m).any()
    # the blob is one 4-connected piece
    labels, parts = ndimage.label(controls[0].numpy())
    assert parts == 1


def test_target_scores_are_the_softmax_and_the_logit_of_the_target():
    model = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    t = torch.tensor([0, 2, 1, 1, 0])
    prob, logit = target_scores(model, x, t)
    logits = model(x).detach()
    assert torch.allclose(logit, logits[torch.arange(5), t])
    assert torch.allclose(prob, logits.softmax(1)[torch.arange(5), t])


class _RedMean(torch.nn.Module):
    """Logits ``[w·mean(red), 0]``: the target probability is a sigmoid of the red mean."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.w * x[:, 0].mean((1, 2))
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_deletion_and_insertion_curves_match_the_hand_computation():
    # 4×4 image, red = 0..15, saliency = red: the reddest pixels go first. With the mean
    # fill, deleting k pixels sets them to the mean of the rest, so the image's red
    # mean becomes the mean of the kept pixels; inserting restores the top k into an
    # image filled with the whole mean.
    red = torch.arange(16, dtype=torch.float32).view(1, 4, 4)
    images = torch.stack([red[0], torch.zeros(4, 4), torch.zeros(4, 4)])[None].to(torch.uint8)
    steps = (0.0, 0.25, 0.5)
    model = _RedMean(0.5)
    got = deletion_curves(model, images, torch.tensor([0]), red, lambda x: x.float(), "mean", steps)
    values = np.arange(16.0)
    sig = lambda z: 1 / (1 + np.exp(-0.5 * z))  # noqa: E731
    whole = round(values.mean())  # the uint8 fill rounds 7.5 to 8
    want_ins = [sig((values[16 - k :].sum() + (16 - k) * whole) / 16) for k in (0, 4, 8)]
    # kept means are 5.5 and 3.5: uint8 fills round them (to even) before the model sees
    want_del = [sig(v) for v in (7.5, (np.arange(12).sum() + 4 * 6) / 16, (28 + 8 * 4) / 16)]
    np.testing.assert_allclose(got["deletion"][0].numpy(), want_del, rtol=1e-5)
    np.testing.assert_allclose(got["insertion"][0].numpy(), want_ins, rtol=1e-5)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731 (two classes, the other logit 0)
    np.testing.assert_allclose(
        got["deletion_logit"][0].numpy(), logit(np.array(want_del)), rtol=1e-4
    )
    # removing the reddest first costs more than a random order, on average
    rand = deletion_curves(
        model, images, torch.tensor([0]), red, lambda x: x.float(), "mean", steps, random=True
    )
    assert curve_area(steps, got["deletion"]) < curve_area(steps, rand["deletion"])


def test_curve_area_is_the_mean_height_of_the_curve():
    steps = (0.0, 0.1, 0.2, 0.4)
    assert curve_area(steps, np.full(4, 0.7)) == pytest.approx(0.7)
    np.testing.assert_allclose(curve_area(steps, np.array([[0.0, 0.1, 0.2, 0.4]])), [0.2])
    with pytest.raises(ValueError):
        curve_area((0.0,), [1.0])


def test_objects_to_remove_are_the_largest_present_ones_above_the_threshold():
    lab = torch.zeros(2, 8, 8, dtype=torch.int64)
    lab[0, :4] = 3  # 32 px
    lab[0, 4:, :2] = 5  # 8 px
    lab[0, 4:, 2:3] = 7  # 4 px
    lab[1, :, :] = 2
    got = objects_to_remove(lab, min_pixels=5, max_objects=8)
    assert got == [[(3, 32), (5, 8)], [(2, 64)]]
    assert objects_to_remove(lab, min_pixels=1, max_objects=1) == [[(3, 32)], [(2, 64)]]
    assert objects_to_remove(lab, 1, 8, classes={5, 7}) == [[(5, 8), (7, 4)], []]


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 16×16 images: a red object (class 4) on black, and a grey one without it."""
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    labels = torch.zeros(2, 16, 16, dtype=torch.int64)
    images[0, 0, 2:8, 3:9] = 255
    labels[0, 2:8, 3:9] = 4
    labels[0, 10:, :] = 6  # road: black, like the background
    images[1] = 90
    labels[1, :8] = 6
    return images, labels


def test_ablating_an_object_equals_filling_it_and_running_the_model_again():
    images, labels = _scene()
    model, prepare = _RedMean(0.05), lambda x: x.float()
    targets = torch.tensor([0, 0])
    objects = objects_to_remove(labels, 4, 8)
    got = ablate_objects(model, images, labels, targets, prepare, objects, [11, 12], "mean", 2)
    assert got["image"].tolist() == [0, 0, 1] and got["class"].tolist() == [6, 4, 6]
    for r in range(3):
        i, c = int(got["image"][r]), int(got["class"][r])
        mask = labels[i : i + 1] == c
        p, z = target_scores(model, prepare(fill_mean(images[i : i + 1], mask)), targets[:1])
        assert got["prob_removed"][r] == pytest.approx(float(p[0]), abs=1e-6)
        assert got["logit_removed"][r] == pytest.approx(float(z[0]), abs=1e-6)
        control, ok = control_masks(mask, [[[11, 12][i], c]])
        assert ok.item() and got["control_ok"][r]
        p, _ = target_scores(model, prepare(fill_mean(images[i : i + 1], control)), targets[:1])
        assert got["prob_control"][r] == pytest.approx(float(p[0]), abs=1e-6)
    red = 1  # the red object: removing it costs the model, its control does not
    assert got["prob_removed"][red] < got["prob"][red] <= got["prob_control"][red]
    # a row does not depend on its batch
    alone = ablate_objects(
        model, images[:1], labels[:1], targets[:1], prepare, objects[:1], [11], "mean", 1
    )
    for k in ("prob_removed", "prob_control", "logit_removed"):
        np.testing.assert_array_equal(alone[k], got[k][:2])


def test_an_image_without_objects_adds_no_rows():
    images, labels = _scene()
    got = ablate_objects(
        _RedMean(1.0), images, labels, torch.tensor([0, 1]), lambda x: x.float(), [[], []], [0, 1]
    )
    assert all(len(v) == 0 for k, v in got.items() if not k.startswith("image_"))
    assert len(got["image_prob"]) == 2  # the whole images are still scored


def test_ablation_rows_are_one_per_object_control_and_curve_step():
    images, labels = _scene()
    model, prepare = _RedMean(0.05), lambda x: x.float()
    targets = torch.tensor([0, 1])
    objects = objects_to_remove(labels, 4, 8)
    got = ablate_objects(model, images, labels, targets, prepare, objects, [11, 12], "mean", 2)
    steps = (0.0, 0.5)
    sal = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    args = (model, images, targets, sal, prepare, "mean", steps)
    curves = {"mask": deletion_curves(*args), "random": deletion_curves(*args, True, 3)}
    rows = ablation_rows(
        ["i0", "i1"], ["a", "b"], "m", targets.numpy(), got, curves, steps, "mean", 16
    )
    table = pa.table(rows, schema=ABLATIONS)
    # image 0: two objects + two controls + 2 orders × 2 kinds × 2 steps; image 1: one object
    assert table.num_rows == (4 + 8) + (2 + 8)
    t = table.to_pylist()
    objs = [r for r in t if r["kind"] == "object"]
    assert [(r["image_id"], r["class"]) for r in objs] == [("i0", 6), ("i0", 4), ("i1", 6)]
    for r, k in zip(objs, range(3)):
        assert r["of_class"] == r["class"] and r["pixels"] == got["pixels"][k]
        assert r["step"] == pytest.approx(got["pixels"][k] / 256)
        assert r["prob_after"] == pytest.approx(float(got["prob_removed"][k]))
        assert r["prob_before"] == pytest.approx(float(got["prob"][k]))
    ctrl = [r for r in t if r["kind"] == "control"]
    assert [(r["class"], r["of_class"]) for r in ctrl] == [(-1, 6), (-1, 4), (-1, 6)]
    assert [r["prob_after"] for r in ctrl] == pytest.approx(got["prob_control"].tolist())
    dele = [
        r for r in t if r["kind"] == "deletion" and r["order"] == "random" and r["image_id"] == "i1"
    ]
    assert [r["step"] for r in dele] == [0.0, 0.5] and [r["pixels"] for r in dele] == [0, 128]
    assert [r["prob_after"] for r in dele] == pytest.approx(
        curves["random"]["deletion"][1].tolist()
    )
    assert {r["fill"] for r in t} == {"mean"} and {
        r["target"] for r in t if r["image_id"] == "i1"
    } == {1}


def test_an_added_explanations_curves_are_rows_of_their_own_order():
    images, labels = _scene()
    model, prepare = _RedMean(0.05), lambda x: x.float()
    targets = torch.tensor([0, 1])
    got = ablate_objects(model, images, labels, targets, prepare, [[], []], [11, 12], "mean", 2)
    steps = (0.0, 0.5)
    gen = torch.Generator().manual_seed(0)
    sal, other = torch.rand(2, 16, 16, generator=gen), torch.rand(2, 16, 16, generator=gen)
    args = (model, images, targets, sal, prepare, "mean", steps)
    curves = {
        "gradcam++@layer3": deletion_curves(model, images, targets, other, prepare, "mean", steps),
        "mask": deletion_curves(*args),
        "random": deletion_curves(*args, True, 3),
    }
    rows = ablation_rows(
        ["i0", "i1"], ["a", "b"], "m", targets.numpy(), got, curves, steps, "mean", 16
    )
    t = pa.table(rows, schema=ABLATIONS).to_pylist()
    orders = list(dict.fromkeys(r["order"] for r in t if r["image_id"] == "i0"))
    assert orders == ["mask", "random", "gradcam++@layer3"]  # the paper's two first
    mine = [r for r in t if r["order"] == "gradcam++@layer3" and r["kind"] == "deletion"]
    assert [r["prob_after"] for r in mine] == pytest.approx(
        curves["gradcam++@layer3"]["deletion"].flatten().tolist()
    )


def test_a_random_order_seeded_per_image_does_not_depend_on_the_batch():
    images, _ = _scene()
    model, prepare = _RedMean(0.05), lambda x: x.float()
    targets = torch.tensor([0, 0])
    sal = torch.zeros(2, 16, 16)
    steps = (0.0, 0.3, 0.6)

    def curves(imgs, seeds):
        n = len(imgs)
        return deletion_curves(
            model, imgs, targets[:n], sal[:n], prepare, "mean", steps, True, seeds
        )

    both = curves(images, [5, 9])
    alone = curves(images[:1], [5])
    torch.testing.assert_close(both["deletion"][:1], alone["deletion"])
    other = curves(images[:1], [9])
    assert not torch.equal(other["deletion"], alone["deletion"])  # the seed decides
