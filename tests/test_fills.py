"""Fills: outside the mask bit for bit, inside as specified, against scipy and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndimage
import torch
from PIL import Image

from citylens.fills import (
    DEFAULT_FILL,
    FILLS,
    fill_blur,
    fill_inpaint,
    fill_mean,
    gaussian_blur,
)


def _images(b=3, h=24, w=20, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=gen)


def _masks(b=3, h=24, w=20) -> torch.Tensor:
    m = torch.zeros(b, h, w, dtype=torch.bool)
    m[0, 3:9, 4:12] = True
    m[1, 10:20, 0:5] = True
    m[1, 2, 17] = True  # two parts
    m[2, 0, 0] = True
    return m


@pytest.mark.parametrize("how", sorted(FILLS))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_a_fill_leaves_every_pixel_outside_the_mask_as_it_was(how, dtype):
    x, m = _images().to(dtype), _masks()
    out = FILLS[how](x, m)
    assert out.dtype == dtype and out.shape == x.shape
    outside = ~m[:, None].expand_as(x)
    assert torch.equal(out[outside], x[outside])
    assert not torch.equal(out[~outside], x[~outside])  # and it changed inside


def test_mean_fill_is_the_mean_colour_outside_the_mask():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    m = torch.tensor([[[True, False], [False, False]], [[True, True], [True, True]]])
    out = fill_mean(x, m)
    # image 0, channel c: pixels 4c+1, 4c+2, 4c+3 outside -> mean 4c+2
    assert out[0, :, 0, 0].tolist() == [2.0, 6.0, 10.0]
    # a mask over the whole image: the whole image's mean
    assert out[1, :, 0, 0].tolist() == pytest.approx(x[1].mean((1, 2)).tolist())


@pytest.mark.parametrize("sigma", [1.0, 3.0, 8.0])
def test_the_blur_equals_scipys_gaussian_filter(sigma):
    x = torch.rand(2, 3, 23, 9, dtype=torch.float64) * 255  # narrower than the kernel
    got = gaussian_blur(x, sigma).numpy()
    ref = np.stack(
        [
            [ndimage.gaussian_filter(x[b, c].numpy(), sigma, mode="reflect") for c in range(3)]
            for b in range(2)
        ]
    )
    np.testing.assert_allclose(got, ref, atol=1e-9)


def test_blur_fill_is_the_blurred_image_inside_the_mask():
    x, m = _images().float(), _masks()
    out = fill_blur(x, m, sigma=4.0)
    ref = torch.from_numpy(
        np.stack(
            [
                [ndimage.gaussian_filter(x[b, c].double().numpy(), 4.0) for c in range(3)]
                for b in range(3)
            ]
        )
    ).float()
    inside = m[:, None].expand_as(x)
    torch.testing.assert_close(out[inside], ref[inside], atol=1e-4, rtol=0)


def test_inpaint_stays_within_the_known_pixels_and_keeps_a_constant_image_constant():
    x, m = _images().float(), _masks()
    out = fill_inpaint(x, m)
    for b in range(3):
        known = x[b][:, ~m[b]]
        inside = out[b][:, m[b]]
        assert (inside >= known.min(1, keepdim=True).values - 1e-4).all()
        assert (inside <= known.max(1, keepdim=True).values + 1e-4).all()
    flat = torch.full((1, 3, 16, 16), 77, dtype=torch.uint8)
    hole = torch.zeros(1, 16, 16, dtype=torch.bool)
    hole[0, 4:12, 4:12] = True
    assert torch.equal(fill_inpaint(flat, hole), flat)


def test_inpaint_continues_the_surroundings_smoothly():
    # left half dark, right half bright; a hole across the border is filled with values
    # that rise from left to right, unlike a flat mean
    x = torch.zeros(1, 1, 32, 32)
    x[..., 16:] = 200.0
    hole = torch.zeros(1, 32, 32, dtype=torch.bool)
    hole[0, 8:24, 8:24] = True
    row = fill_inpaint(x, hole)[0, 0, 16, 8:24]
    assert row[0] < 50 and row[-1] > 150
    assert (row[1:] - row[:-1] >= -1e-6).all()


def test_the_default_fill_changes_natural_image_statistics_least(shared_data):
    """On real photos' objects (ADE20K samples with their label maps), the gradient
    histogram inside each filled object is compared with the rest of the photo's; the
    default fill is the one nearest (total variation distance, mean over objects)."""
    root = shared_data / "ade20k" / "sampleData"
    bins = np.linspace(0, 120, 41)

    def grads(x: torch.Tensor) -> torch.Tensor:
        lum = x.double().mean(0)
        return torch.hypot(lum[1:, 1:] - lum[1:, :-1], lum[1:, 1:] - lum[:-1, 1:])

    def hist(g: torch.Tensor) -> np.ndarray:
        h = np.histogram(g.numpy().clip(0, 120), bins=bins)[0].astype(float)
        return h / max(h.sum(), 1.0)

    distance = {how: [] for how in FILLS}
    for path in sorted((root / "images").glob("*.jpg")):
        im = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
        lab = Image.open(root / "annotations" / f"{path.stem}.png").resize(
            (224, 224), Image.NEAREST
        )
        lab = np.asarray(lab)
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None]
        g0 = grads(x[0])
        for c in np.unique(lab):
            m = torch.from_numpy(lab == c)[None]
            if c == 0 or not 0.01 <= m.float().mean() <= 0.5:
                continue
            inner = m[0, 1:, 1:]
            for how, f in FILLS.items():
                g = grads(f(x, m)[0])
                distance[how].append(0.5 * np.abs(hist(g0[~inner]) - hist(g[inner])).sum())
    assert len(distance[DEFAULT_FILL]) >= 10
    mean = {how: float(np.mean(d)) for how, d in distance.items()}
    assert min(mean, key=mean.get) == DEFAULT_FILL, mean
    assert mean["mean"] == max(mean.values())  # a flat patch is the least natural
