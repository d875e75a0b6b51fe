import io

import numpy as np
import pytest
import torch
from PIL import Image

from citylens.data.images import (
    IMAGENET_MEAN,
    DecodeError,
    decode_chw,
    decode_rgb,
    load_batch,
    load_labels,
    normalize,
    resize_chw,
    resize_rgb,
)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_jpeg_roundtrip_shape():
    img = np.full((20, 30, 3), (200, 40, 10), np.uint8)
    out = decode_rgb(_encode(Image.fromarray(img), "JPEG", quality=95))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).max() < 6


def test_alpha_is_composited_on_white():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half transparent
    out = decode_rgb(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0].tolist() == [255, 0, 0] and out[9, 9].tolist() == [255, 255, 255]


def test_grayscale_cmyk_and_16bit_become_rgb():
    gray = decode_rgb(_encode(Image.fromarray(np.full((9, 9), 77, np.uint8)), "PNG"))
    assert gray.shape == (9, 9, 3) and (gray == 77).all()
    cmyk = decode_rgb(_encode(Image.new("CMYK", (12, 12), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.shape == (12, 12, 3) and cmyk[0, 0, 0] > 200 and cmyk[0, 0, 1] < 60
    deep = Image.fromarray(np.full((9, 9), 65535, np.uint16))
    out = decode_rgb(_encode(deep, "PNG"))
    assert out.shape == (9, 9, 3) and (out == 255).all()


def test_exif_orientation_is_applied():
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode_rgb(_encode(Image.fromarray(img), "JPEG", exif=exif, quality=95))
    assert out.shape == (20, 10, 3)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # white half now on top


@pytest.mark.parametrize(
    "data,kind",
    [
        (b"", "empty"),
        (b"this is a text file, not a jpeg", "not_an_image"),
        (None, "corrupt"),  # truncated JPEG, built below
        (None, "too_small"),
    ],
)
def test_bad_images_raise_with_a_kind(data, kind):
    if kind == "corrupt":
        noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
        full = _encode(Image.fromarray(noise), "JPEG")
        data = full[: len(full) // 2]
    if kind == "too_small":
        data = _encode(Image.new("RGB", (1, 1)), "PNG")
    with pytest.raises(DecodeError) as err:
        decode_rgb(data)
    assert err.value.kind == kind


def test_decompression_bomb_is_refused_before_decoding():
    data = _encode(Image.new("L", (400, 300)), "PNG")
    with pytest.raises(DecodeError) as err:
        decode_rgb(data, max_pixels=100_000)
    assert err.value.kind == "too_large" and "400x300" in str(err.value)


def test_resize_and_normalize():
    img = np.zeros((30, 40, 3), np.uint8)
    assert resize_rgb(img, 16).shape == (16, 16, 3)
    batch = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    x = normalize(batch)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert x[0, 0, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[0] / 0.229)


def test_label_maps(shared_data):
    data = (shared_data / "ade20k/sampleData/annotations/ADE_val_00000003.png").read_bytes()
    lab = load_labels(data)
    assert lab.shape == (300, 400) and lab.max() == 103
    with pytest.raises(DecodeError) as err:
        load_labels(_encode(Image.new("RGB", (4, 4)), "PNG"))
    assert err.value.kind == "bad_labels"


def test_load_batch_records_bad_files_and_goes_on(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(good)
    (tmp_path / "empty.jpg").write_bytes(b"")
    batch, ok, errors = load_batch(
        [str(good), str(tmp_path / "empty.jpg"), str(tmp_path / "gone.jpg"), str(good)], 16
    )
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.uint8
    assert ok == [0, 3]
    assert [(i, kind) for i, kind, _ in errors] == [(1, "empty"), (2, "unreadable")]


def _photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth image with noise: compresses like a photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.int16)
    return (img + rng.integers(-8, 9, img.shape)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "make",
    [
        lambda: _encode(Image.fromarray(_photo()), "JPEG", quality=90),
        lambda: _encode(Image.fromarray(_photo()).convert("L"), "JPEG", quality=90),
        lambda: _encode(Image.fromarray(_photo()), "PNG"),
        lambda: _encode(Image.fromarray(_photo()).convert("L"), "PNG"),
    ],
    ids=["rgb-jpeg", "gray-jpeg", "rgb-png", "gray-png"],
)
def test_fast_decoder_gives_pillows_pixels(make):
    """Plain JPEG/PNG take torchvision.io's decoder; it must give Pillow's exact pixels."""
    from citylens.data import images

    data = make()
    with Image.open(io.BytesIO(data)) as im:
        assert images._plain(im, data)
        reference = images._decode_pillow(im)
    assert images._decode_plain(data) is not None  # the fast path really ran
    np.testing.assert_array_equal(decode_rgb(data), reference)


def test_truncated_or_odd_files_go_to_pillow():
    from citylens.data import images

    whole = _encode(Image.fromarray(_photo()), "JPEG", quality=90)
    cut = whole[: len(whole) // 2]
    with Image.open(io.BytesIO(cut)) as im:
        assert not images._plain(im, cut)  # libjpeg would pad it; Pillow refuses it
    with pytest.raises(DecodeError) as err:
        decode_rgb(cut)
    assert err.value.kind == "corrupt"
    rgba = _encode(Image.fromarray(_photo()).convert("RGBA"), "PNG")
    with Image.open(io.BytesIO(rgba)) as im:
        assert not images._plain(im, rgba)


def test_resize_matches_pillow_within_one_level():
    img = _photo(300, 400)
    ours = resize_rgb(img, 96)
    pillow = np.asarray(Image.fromarray(img).resize((96, 96), Image.BILINEAR))
    assert ours.shape == (96, 96, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - pillow).max() <= 1
    assert np.abs(ours.astype(int) - pillow).mean() < 0.1


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    return _encode(img, "JPEG", **kw)


def test_device_decodable_takes_only_plain_baseline_jpegs():
    from citylens.data.images import device_decodable

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8))
    upright, rotated = Image.Exif(), Image.Exif()
    upright[0x0112], rotated[0x0112] = 1, 6
    baseline = _jpeg_bytes(photo)
    cases = {
        "baseline": (baseline, True),
        "exif upright": (_jpeg_bytes(photo, exif=upright), True),
        "exif rotated": (_jpeg_bytes(photo, exif=rotated), False),  # CPU applies EXIF
        "progressive": (_jpeg_bytes(photo, progressive=True), False),
        "grayscale": (_jpeg_bytes(photo.convert("L")), False),
        "cmyk": (_jpeg_bytes(photo.convert("CMYK")), False),
        "png": (_encode(photo, "PNG"), False),
        "truncated": (baseline[: len(baseline) // 2], False),
    }
    got = {name: device_decodable(data) for name, (data, _) in cases.items()}
    assert got == {name: want for name, (_, want) in cases.items()}
    with pytest.raises(DecodeError) as err:
        device_decodable(b"")
    assert err.value.kind == "empty"
    with pytest.raises(DecodeError) as err:
        device_decodable(_jpeg_bytes(Image.new("RGB", (4, 40))))
    assert err.value.kind == "too_small"  # the header check still runs


def test_decode_jpegs_on_cpu_gives_decode_chws_pixels(shared_data):
    """The actor's batched path, run on the CPU: the same pixels as the task's path."""
    from citylens.data.images import decode_jpegs, device_decodable

    photos = sorted((shared_data / "london_or_london").glob("*/*.jpg"))[:6]
    datas = [p.read_bytes() for p in photos]
    rng = np.random.default_rng(1)
    datas.append(_jpeg_bytes(Image.fromarray(rng.integers(0, 255, (300, 170, 3), np.uint8))))
    assert all(device_decodable(d) for d in datas)
    images, ok, errors = decode_jpegs(datas, 96, "cpu")
    want = torch.stack([resize_chw(decode_chw(d), 96) for d in datas])
    assert ok == list(range(len(datas))) and errors == []
    assert images.dtype == torch.uint8 and torch.equal(images, want)


def test_decode_jpegs_falls_back_per_image_and_records_what_nothing_decodes():
    from citylens.data.images import decode_jpegs

    rng = np.random.default_rng(2)
    good = [
        _jpeg_bytes(Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8))) for _ in range(2)
    ]
    broken = b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 255, 200, np.uint8)) + b"\xff\xd9"
    images, ok, errors = decode_jpegs([good[0], broken, good[1]], 32, "cpu")
    assert ok == [0, 2]
    assert [(i, kind) for i, kind, _ in errors] == [(1, "not_an_image")]
    want = torch.stack([resize_chw(decode_chw(d), 32) for d in good])
    assert torch.equal(images, want)
    empty, ok, errors = decode_jpegs([], 32, "cpu")
    assert empty.shape == (0, 3, 32, 32) and ok == [] and errors == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvJPEG)")
def test_decode_jpegs_on_cuda_is_close_to_the_cpu_decoder_and_falls_back(shared_data):
    """nvJPEG's IDCT is not libjpeg-turbo's: pixels may differ by a grey level or two,
    not more on average; a broken file in the batch still costs only itself."""
    from citylens.data.images import decode_jpegs

    photos = sorted((shared_data / "london_or_london").glob("*/*.jpg"))[:6]
    datas = [p.read_bytes() for p in photos]
    broken = b"\xff\xd8\xff\xe0" + bytes(200) + b"\xff\xd9"
    # work queued on the caller's stream while the decoder runs (pytorch/vision#9606)
    busy = torch.ones(4096, 4096, device="cuda")
    sums = [(busy @ busy).sum() for _ in range(4)]  # 4096³ = 2³⁶ each, exactly
    del busy  # its block is free for the decoder while the products are still queued
    images, ok, errors = decode_jpegs([*datas, broken], 128, "cuda")
    assert images.device.type == "cuda" and ok == list(range(len(datas)))
    assert [(i, kind) for i, kind, _ in errors] == [(len(datas), "not_an_image")]
    want = torch.stack([resize_chw(decode_chw(d), 128) for d in datas])
    diff = (images.cpu().float() - want.float()).abs()
    assert diff.mean() < 1.5, f"mean |Δ| {diff.mean():.2f} grey levels"
    assert torch.stack(sums).tolist() == [2.0**36] * 4


def test_a_bomb_beyond_pillows_own_limit_is_too_large_and_named():
    """Pillow refuses a header over twice its pixel limit before check_size sees it:
    that is still a decompression bomb (too_large), never 'not an image'."""
    from citylens.data.manifest import probe

    bomb = _encode(Image.new("1", (15_000, 15_000)), "PNG")  # 225 M pixels, 30 kB
    for call in (lambda: probe(bomb, "/c/bomb.png"), lambda: decode_chw(bomb, name="/c/bomb.png")):
        with pytest.raises(DecodeError) as err:
            call()
        assert err.value.kind == "too_large" and str(err.value).startswith("/c/bomb.png: ")


def test_messages_name_the_file_never_a_buffer():
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    full = _encode(Image.fromarray(noise), "PNG")
    truncated = full[: len(full) // 2]
    for data, kind in ((b"not an image", "not_an_image"), (truncated, "corrupt"), (b"", "empty")):
        with pytest.raises(DecodeError) as err:
            decode_chw(data, name="s3://b/city/x_0.png")
        assert err.value.kind == kind
        assert "s3://b/city/x_0.png" in str(err.value) and "BytesIO" not in str(err.value)
