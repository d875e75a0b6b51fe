import numpy as np
import pytest
import torch

from citylens.analysis.ar import average_residual, pairwise_ar


def test_ar_by_hand():
    a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    b = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    assert average_residual(a, b, (2, 2)).tolist() == [0.5]
    assert average_residual(a, a, (2, 2)).tolist() == [0.0]
    assert average_residual(a, 1 - a, (2, 2)).tolist() == [1.0]


def test_ar_with_an_empty_mask_is_the_other_masks_mean():
    a = torch.zeros(1, 2, 2)
    b = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])
    assert average_residual(a, b, (2, 2)) == pytest.approx([0.4375])


def test_ar_across_grids():
    # 1x1 positive mask -> all ones on any grid; vs a single peak on 2x2: 3 of 4 differ.
    a = torch.ones(1, 1, 1)
    b = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert average_residual(a, b, (2, 2)) == pytest.approx([0.75])


def test_pairwise_is_symmetric_and_complete():
    rng = np.random.default_rng(0)
    masks = {m: rng.random((3, 4, 4)).astype(np.float32) for m in ("c", "a", "b")}
    out = pairwise_ar(masks, (8, 8))
    assert list(out) == [("a", "b"), ("a", "c"), ("b", "c")]
    for (m1, m2), ar in out.items():
        # float32 sums in another order: equal to float32's precision, not bit for bit
        np.testing.assert_allclose(ar, average_residual(masks[m2], masks[m1], (8, 8)), rtol=1e-6)
        assert ar.shape == (3,)
        assert ((ar >= 0) & (ar <= 1)).all()


@pytest.mark.parametrize(
    "shape_a, shape_b, grid",
    [((14, 14), (7, 7), (224, 224)), ((14, 14), (14, 14), (96, 96)), ((5, 3), (42, 42), (17, 29))],
)
def test_fused_ar_equals_upsample_then_normalise(shape_a, shape_b, grid):
    """The fused computation against the plain one: upsample each mask to the grid,
    min-max normalise it there, mean |difference| (incl. empty and constant masks)."""
    from citylens.masks import upsample_masks

    rng = np.random.default_rng(0)
    a = rng.random((40, *shape_a)).astype(np.float32) ** 3
    b = rng.random((40, *shape_b)).astype(np.float32)
    a[0] = 0.0  # empty
    b[1] = 0.7  # constant positive: all ones
    a[2] = 0.0
    a[2, 0, 0] = 1e-3  # one faint peak
    b[3] = b[3] * 1e-2 + 0.5  # low contrast
    ref = (upsample_masks(a, grid) - upsample_masks(b, grid)).abs().mean(dim=(-2, -1))
    np.testing.assert_allclose(average_residual(a, b, grid), ref.double().numpy(), atol=2e-6)
