"""The ``labels`` segmenter on ADE20K-format annotations and custom class files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from citylens.data.images import load_labels
from citylens.data.manifest import scan_city
from citylens.overlap import class_pixels
from citylens.segment import build_segmenter
from citylens.storage import read_bytes


def test_ade20k_samples_give_the_pixel_counts_of_the_pngs(shared_data):
    root = shared_data / "ade20k/sampleData"
    sources, _ = scan_city("ade", str(root / "images"), labels=str(root / "annotations"))
    assert len(sources) == 3 and all(s.label_uri for s in sources)
    seg = build_segmenter("labels")
    maps = seg([load_labels(read_bytes(s.label_uri)) for s in sources])
    for src, lab in zip(sources, maps):
        with Image.open(src.label_uri) as im:
            assert im.mode == "L"
            hist = im.histogram()  # PIL's own count of each 8-bit value
            assert lab.shape == (im.height, im.width)
        counts = class_pixels(lab, len(seg.vocabulary))
        np.testing.assert_array_equal(counts, hist[:151])
        assert sum(hist[151:]) == 0 and counts.sum() == lab.size
        assert (counts[1:] > 0).sum() >= 3  # real scenes: several classes each


def test_custom_class_file_sets_the_vocabulary_and_bounds():
    seg = build_segmenter("labels", classes="index,name,r,g,b\n1,tree,0,255,0\n2,road,9,9,9\n")
    assert seg.vocabulary.names == ("other", "tree", "road")
    np.testing.assert_array_equal(seg.vocabulary.colors[2], [9, 9, 9])
    ok = np.array([[0, 1], [2, 2]])
    np.testing.assert_array_equal(seg([ok])[0], ok)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        seg([np.array([[3]])])
