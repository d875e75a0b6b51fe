import numpy as np
import pytest
import torch

from citylens.masks import explanation, upsample_masks


def test_integer_upsampling_by_hand():
    # Half-pixel bilinear 2->4: sample positions 0, .25, .75, 1 of the source grid.
    mask = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    rows = torch.tensor([1.0, 0.75, 0.25, 0.0])
    cols = torch.tensor([0.0, 0.25, 0.75, 1.0])
    expected = rows[:, None] * cols[None, :]
    torch.testing.assert_close(upsample_masks(mask, (4, 4)), expected)
    got = explanation(mask, (4, 4), 0.6)
    want = torch.zeros(4, 4, dtype=torch.bool)
    want[0, 2] = want[0, 3] = want[1, 3] = True  # .75, 1, .75 pass; .5625 does not
    assert torch.equal(got, want)


def test_renormalisation_after_upsampling():
    # A 3x3 peak resampled to 4x4 reaches only 0.625**2 before re-normalisation.
    mask = torch.zeros(3, 3)
    mask[1, 1] = 1.0
    up = upsample_masks(mask, (4, 4))
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1.0
    torch.testing.assert_close(up, expected)


def test_empty_mask_explains_nothing_and_batches_work():
    masks = np.zeros((2, 3, 3), np.float32)
    masks[1] = np.eye(3)
    out = explanation(masks, (6, 6), 0.5)
    assert out.shape == (2, 6, 6)
    assert not out[0].any()
    assert out[1].any()


@pytest.mark.parametrize("theta", [0.0, 1.0, -0.1, 1.5])
def test_theta_must_be_inside_the_open_interval(theta):
    with pytest.raises(ValueError, match="theta"):
        explanation(torch.ones(2, 2), (2, 2), theta)
