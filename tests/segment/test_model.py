"""The CSAIL segmenters behind the protocol: sizes, weights folders, multi-scale."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from citylens.errors import UnsafeFileError
from citylens.segment import build_segmenter, vocabulary_of
from citylens.segment.csail import build_csail
from citylens.segment.model import find_csail_weights, scale_sizes


def test_scale_sizes_follow_csail_rule():
    # 480x640: short side -> 300 gives 300x400; 600 gives 600x800; all multiples of 8.
    assert scale_sizes(480, 640, (300, 600), 1000) == [(304, 400), (600, 800)]
    # long side capped at 1000: 200x1000 at short 300 would be 300x1500 -> 200x1000
    assert scale_sizes(200, 1000, (300,), 1000) == [(200, 1000)]
    # 97x97 at 100 -> 100x100 rounds up to 104x104
    assert scale_sizes(97, 97, (100,), 1000) == [(104, 104)]


def test_find_weights_takes_highest_common_epoch(tmp_path):
    for name in ("encoder_epoch_20.pth", "decoder_epoch_20.pth", "encoder_epoch_25.pth"):
        (tmp_path / name).write_bytes(b"x")
    enc, dec = find_csail_weights(str(tmp_path))
    assert enc.endswith("encoder_epoch_20.pth") and dec.endswith("decoder_epoch_20.pth")


def test_find_weights_names_folder_when_files_are_missing(tmp_path):
    (tmp_path / "encoder_epoch_20.pth").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        find_csail_weights(str(tmp_path))


def test_model_segmenter_needs_explicit_weights():
    with pytest.raises(ValueError, match="needs weights"):
        build_segmenter("ade20k-ppm", None)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ppm")
    torch.manual_seed(0)
    net = build_csail("ade20k-ppm")
    torch.save(net.encoder.state_dict(), d / "encoder_epoch_20.pth")
    torch.save(net.decoder.state_dict(), d / "decoder_epoch_20.pth")
    return d


def test_loaded_segmenter_gives_valid_class_maps_at_image_size(weights_dir, rng):
    seg = build_segmenter("ade20k-ppm", str(weights_dir), scales=(64,), max_size=200)
    imgs = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    imgs.append(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    maps = seg(imgs)
    assert [m.shape for m in maps] == [(48, 64)] * 3 + [(40, 40)]
    for m in maps:
        assert m.dtype == np.int32 and m.min() >= 1 and m.max() <= 150
    assert len(seg.vocabulary) == 151 == len(vocabulary_of("ade20k-ppm"))
    # batching and grouping by size do not change a map
    np.testing.assert_array_equal(seg([imgs[3]])[0], maps[3])


def test_multiscale_averages_single_scale_probabilities(weights_dir, rng):
    img = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    single = [
        build_segmenter("ade20k-ppm", str(weights_dir), scales=(s,)).probabilities([img])
        for s in (40, 64)
    ]
    multi = build_segmenter("ade20k-ppm", str(weights_dir), scales=(40, 64))
    probs = multi.probabilities([img])
    torch.testing.assert_close(probs, (single[0] + single[1]) / 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(probs.sum(1).cpu(), torch.ones(1, 40, 56), atol=1e-5, rtol=0)
    expected = (probs.argmax(1) + 1)[0].cpu().numpy()
    np.testing.assert_array_equal(multi([img])[0], expected)


class _Boom:
    def __reduce__(self):
        return (print, ("code ran",))


def test_weights_that_would_run_code_are_refused(tmp_path):
    (tmp_path / "encoder_epoch_1.pth").write_bytes(pickle.dumps({"conv1.weight": _Boom()}))
    (tmp_path / "decoder_epoch_1.pth").write_bytes(pickle.dumps({}))
    with pytest.raises(UnsafeFileError, match="encoder_epoch_1.pth: not a plain state_dict"):
        build_segmenter("ade20k-ppm", str(tmp_path))


def test_random_weights_are_seeded():
    a = build_segmenter("ade20k-upernet", "random:3", scales=(32,))
    b = build_segmenter("ade20k-upernet", "random:3", scales=(32,))
    for (k, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(x, y), k


def test_class_file_must_name_150_classes():
    with pytest.raises(ValueError, match="150 classes"):
        vocabulary_of("ade20k-ppm", "index,name\n1,wall\n2,road\n")


def test_resize_matches_pil_bilinear_within_rounding(rng):
    from PIL import Image, ImageFilter

    from citylens.data.images import IMAGENET_MEAN, IMAGENET_STD

    seg = build_segmenter("ade20k-ppm", "random", scales=(32,), device="cpu")
    img = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    img = np.array(Image.fromarray(img).filter(ImageFilter.SMOOTH))
    batch = torch.from_numpy(img[None]).permute(0, 3, 1, 2)
    for h, w in ((40, 60), (120, 180)):  # down and up
        got = seg._inputs(batch, (h, w))[0].permute(1, 2, 0).numpy()
        got = got * np.asarray(IMAGENET_STD) * 255 + np.asarray(IMAGENET_MEAN) * 255
        pil = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR), np.float64)
        diff = np.abs(got - pil)
        assert diff.mean() < 0.5 and diff.max() < 1.5  # PIL rounds to uint8


def test_weights_are_checked_on_the_meta_device_key_for_key(tmp_path):
    from citylens.segment.csail import WeightsMismatch
    from citylens.segment.model import check_csail_weights

    torch.manual_seed(0)
    net = build_csail("ade20k-upernet")
    torch.save(net.encoder.state_dict(), tmp_path / "encoder_epoch_20.pth")
    decoder = net.decoder.state_dict()
    torch.save(decoder, tmp_path / "decoder_epoch_20.pth")
    check_csail_weights("ade20k-upernet", str(tmp_path))  # fits: no error
    dropped = sorted(decoder)[0]
    torch.save(
        {k: v for k, v in decoder.items() if k != dropped}, tmp_path / "decoder_epoch_20.pth"
    )
    with pytest.raises(WeightsMismatch, match=dropped.replace(".", r"\.")):
        check_csail_weights("ade20k-upernet", str(tmp_path))
