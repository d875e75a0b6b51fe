"""A study over a corpus seeded with every kind of bad file finishes and accounts for each
(slow): broken files are recorded in the errors tables, odd-but-valid ones are converted,
and a file deleted between ingest and explain is recorded where it is missed."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from citylens.config import load_config
from citylens.pipeline.run import STAGES, run_study
from citylens.storage import Store
from citylens.tables import ERRORS

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _seed_bad_files(folder) -> dict[str, str | None]:
    """Write one of each bad or odd file; returns file name -> expected ingest error kind
    (None: a valid image that must be converted and kept)."""
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8))
    full = _jpeg(photo)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    files = {
        "bad-zero_0.jpg": (b"", "empty"),
        "bad-truncated_0.jpg": (full[: len(full) // 2], "corrupt"),
        "bad-text_0.jpg": (b"this is a text file, not a jpeg", "not_an_image"),
        "bad-tiny_0.png": (_png(Image.new("RGB", (1, 1))), "too_small"),
        "bad-bomb_0.png": (_png(Image.new("1", (12_000, 12_000))), "too_large"),
        "odd-alpha_0.png": (_png(photo.convert("RGBA")), None),
        "odd-gray_0.jpg": (_jpeg(photo.convert("L")), None),
        "odd-cmyk_0.jpg": (_jpeg(photo.convert("CMYK")), None),
        "odd-16bit_0.png": (
            _png(Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)),
            None,
        ),
        "odd-exif_0.jpg": (_jpeg(photo.crop((0, 0, 64, 48)), exif=exif), None),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: kind for name, (_, kind) in files.items()}


def test_every_bad_file_is_recorded_and_nothing_else_is_lost(
    local_ray, three_cities, tiny, tmp_path
):
    root = tmp_path / "cities"
    for city in ("towerville", "signburg"):
        shutil.copytree(three_cities / city, root / city)
        shutil.copytree(three_cities / "labels" / city, root / "labels" / city)
    expected = _seed_bad_files(root / "signburg")
    cfg = load_config(None, tiny.overrides(str(tmp_path / "store"), str(root)))
    store = Store(cfg.store)

    assert [r.status for r in run_study(cfg, ["ingest"], progress=lambda s: None)] == ["ran"]
    ingest = store.record("ingest")
    errors = store.read_table(f"{ingest['folder']}/errors", schema=ERRORS).to_pylist()
    got = {e["uri"].rsplit("/", 1)[1]: e["kind"] for e in errors}
    # what the header shows is caught at ingest; a truncated JPEG only when decoded
    header = {n: k for n, k in expected.items() if k not in (None, "corrupt")}
    assert got == header
    assert all(e["stage"] == "ingest" and e["message"] for e in errors)
    manifest = store.read_table(f"{ingest['folder']}/manifest.parquet")
    names = {u.rsplit("/", 1)[1] for u in manifest["uri"].to_pylist()}
    assert {n for n, k in expected.items() if k is None} <= names  # converted, kept
    exif = manifest.filter(pc.match_substring(manifest["uri"], "odd-exif"))
    assert (exif["width"][0].as_py(), exif["height"][0].as_py()) == (48, 64)  # upright

    # a test image disappears after ingest: the stages that read it record it and go on
    test = manifest.filter(pc.equal(manifest["split"], "test"))
    gone = next(u for u in test["uri"].to_pylist() if "/towerville/" in u)
    (root / "towerville" / gone.rsplit("/", 1)[1]).unlink()
    messages: list[str] = []
    results = run_study(cfg, [s for s in STAGES if s != "ingest"], progress=messages.append)
    assert all(r.status == "ran" for r in results)

    for stage in STAGES:
        counts = store.record(stage)["counts"]
        done = counts["explanations" if stage == "overlap" else "images"]
        assert counts["inputs"] == done + counts["errors"], stage
        table = store.read_table(f"{store.record(stage)['folder']}/errors", schema=ERRORS)
        assert table.num_rows == counts["errors"], stage
        assert all(table["uri"].to_pylist()), f"{stage}: an error row without its file"
    overlap_errors = store.read_table(f"{store.record('overlap')['folder']}/errors").to_pylist()
    assert overlap_errors and {e["kind"] for e in overlap_errors} == {"no_segments"}
    explain_errors = store.read_table(f"{store.record('explain')['folder']}/errors").to_pylist()
    assert [(e["uri"], e["kind"]) for e in explain_errors if e["uri"] == gone] == [
        (gone, "unreadable")
    ]
    train_errors = store.read_table(f"{store.record('train')['folder']}/errors").to_pylist()
    assert any(e["uri"] == gone for e in train_errors)
    # train decodes every split, so it meets the truncated JPEG whichever split it is in
    truncated = [e for e in train_errors if "bad-truncated" in e["uri"]]
    assert [e["kind"] for e in truncated] == ["corrupt"]
    n_explained = store.record("explain")["counts"]["images"]
    assert n_explained == test.num_rows - 1
    report = store.read_bytes("report.html").decode()
    assert f"ingest {len(got)}" in report and "Skipped inputs" in report
