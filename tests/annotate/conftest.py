"""Pages to annotate built from made-up explanations (no study, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.annotate.page import PageItem, build_page, item_pictures
from citylens.vocabulary import ade20k


def make_items(n: int = 8, seed: int = 0) -> list[PageItem]:
    """``n`` explanations of random 64-px images with smooth random masks."""
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        mask = rng.random((7, 7)).astype(np.float32)
        mask = (mask - mask.min()) / (mask.max() - mask.min())
        photo, region, heat = item_pictures(image, mask, 0.6)
        offered = tuple(sorted(rng.choice(np.arange(1, 151), 3, replace=False).tolist()))
        items.append(PageItem(f"img{k:02d}", f"simple-s{k % 2}", 0.6, photo, region, heat, offered))
    return items


@pytest.fixture
def page_file(tmp_path):
    """``page_file(items=None, title=..., vocabulary=ade20k()) -> Path`` of a written page."""

    def write(items=None, title="Annotate the test study", vocabulary=None):
        path = tmp_path / "annotate.html"
        html = build_page(items or make_items(), vocabulary or ade20k(), title)
        path.write_text(html, encoding="utf-8")
        return path

    return write
