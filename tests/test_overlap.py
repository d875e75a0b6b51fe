import numpy as np
import pytest

from citylens.overlap import class_pixels, class_pixels_in_masks

LABELS = np.array([[1, 1, 2], [0, 2, 2], [3, 3, 3]])


def test_counts_by_hand():
    exp = np.array([[[1, 0, 1], [0, 1, 0], [0, 0, 1]]], dtype=bool)
    # inside: (0,0)=1, (0,2)=2, (1,1)=2, (2,2)=3
    assert class_pixels_in_masks(LABELS, exp, 5).tolist() == [[0, 1, 2, 1, 0]]
    assert class_pixels(LABELS, 5).tolist() == [1, 2, 3, 3, 0]


def test_several_explanations_and_empty_one():
    exp = np.zeros((3, 3, 3), bool)
    exp[1] = True
    exp[2, 2] = True
    got = class_pixels_in_masks(LABELS, exp, 4)
    assert got.tolist() == [[0, 0, 0, 0], [1, 2, 3, 3], [0, 0, 0, 3]]
    assert (got.sum(1) == exp.reshape(3, -1).sum(1)).all()


def test_label_outside_vocabulary_and_shape_mismatch():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        class_pixels(LABELS, 3)
    with pytest.raises(ValueError, match="do not match"):
        class_pixels_in_masks(LABELS, np.ones((1, 2, 2), bool), 4)
