"""The page's pure parts: its pictures, its data block and its Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re

import numpy as np
from PIL import Image

from citylens.annotate.page import build_page, item_pictures
from citylens.masks import explanation
from citylens.vocabulary import Vocabulary, ade20k

from .conftest import make_items


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_the_region_is_the_visual_explanation_at_theta():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    mask = rng.random((14, 14)).astype(np.float32)
    mask /= mask.max()
    photo, region, heat = item_pictures(image, mask, 0.6)
    assert Image.open(io.BytesIO(photo)).format == "JPEG"
    alpha = _png(region)[..., 1]
    inside = explanation(mask, (96, 96), 0.6).numpy()
    assert alpha.shape == (96, 96) and 0 < inside.mean() < 1
    np.testing.assert_array_equal(alpha == 0, inside)
    assert set(np.unique(alpha[~inside]).tolist()) == {200}
    h = _png(heat)
    assert h.shape[2] == 4 and set(np.unique(h[..., 3]).tolist()) == {128}


def _script_and_style(page: str) -> tuple[str, str]:
    script = re.findall(r"<script>(.*?)</script>", page, re.S)
    style = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(script) == 1 and len(style) == 1
    return script[0], style[0]


def _data(page: str) -> dict:
    block = re.search(
        r'<script type="application/json" id="citylens-data">(.*?)</script>', page, re.S
    )
    return json.loads(block.group(1))


def _sha(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_the_policy_allows_only_the_pages_own_script_and_style():
    page = build_page(make_items(3), ade20k(), "t")
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    script, style = _script_and_style(page)
    assert "default-src 'none'" in csp and "img-src data:" in csp
    assert f"script-src '{_sha(script)}'" in csp and f"style-src '{_sha(style)}'" in csp
    assert "unsafe" not in csp and "http" not in csp.replace("http-equiv", "")
    # nothing in the page points elsewhere
    assert not re.search(r"(src|href)=\"(?!data:)", page)
    assert "https://" not in page and "http://" not in page


def test_names_from_the_study_cannot_become_markup():
    evil = "</script><script>alert(1)</script>&<b>"
    names = ("other", evil, "sky")
    voc = Vocabulary("evil", names, np.zeros((3, 3), np.uint8))
    items = make_items(2)
    page = build_page(items, voc, f"study {evil}")
    assert "<script>alert(1)" not in page
    assert page.count("<script") == 2  # the data block and the page's script
    parsed = _data(page)
    assert parsed["names"][1] == evil and parsed["title"] == f"study {evil}"
    assert f"<title>study {evil}" not in page and "&lt;/script&gt;" in page
    assert [it["image"] for it in parsed["items"]] == [it.image_id for it in items]


def test_the_page_id_names_the_sample_and_its_pictures():
    a = build_page(make_items(3), ade20k(), "t")
    again = build_page(make_items(3), ade20k(), "t")
    other_pictures = build_page(make_items(3, seed=1), ade20k(), "t")  # same ids
    more = build_page(make_items(4), ade20k(), "t")
    assert _data(a)["id"] == _data(again)["id"]
    assert len({_data(p)["id"] for p in (a, other_pictures, more)}) == 3


def test_a_name_two_classes_share_is_shown_and_exported_with_its_index():
    data = _data(build_page(make_items(1), ade20k(), "t"))
    assert (data["names"][59], data["names"][131]) == ("screen #59", "screen #131")
    assert (data["tokens"][59], data["tokens"][131]) == ("59", "131")
    assert data["names"][2] == data["tokens"][2] == "building"
