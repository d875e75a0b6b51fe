"""The ``labels`` segmenter: ground-truth label maps that come with a dataset.

The synthetic corpus, ADE20K-format annotation PNGs (0 = other, k = class k) or any
dataset with a class file; the vocabulary comes from that class file (default: ADE20K).
"""

from __future__ import annotations

import numpy as np

from citylens.vocabulary import Vocabulary, ade20k

__all__ = ["LabelsSegmenter"]


class LabelsSegmenter:
    """Passes label maps through, checked against the vocabulary.

    Args:
        classes: Class file text (citylens or objectInfo150 format); None for ADE20K.
    """

    name = "labels"
    input_kind = "labels"

    def __init__(self, classes: str | None = None, **_: object) -> None:
        self.vocabulary = self.default_vocabulary(classes)

    @staticmethod
    def default_vocabulary(classes: str | None = None) -> Vocabulary:
        """The vocabulary without building the segmenter (class-file text, else ADE20K)."""
        return ade20k() if classes is None else Vocabulary.from_csv(classes, "classes")

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Check ``(H, W)`` label maps against the vocabulary; returns them as int32."""
        k = len(self.vocabulary)
        out = []
        for lab in inputs:
            lab = np.asarray(lab)
            if lab.ndim != 2:
                raise ValueError(f"label map must be 2-D, got shape {lab.shape}")
            if lab.size and (lab.min() < 0 or lab.max() >= k):
                raise ValueError(
                    f"label map has class {int(lab.max())}, outside the vocabulary of {k - 1} "
                    "classes"
                )
            out.append(lab.astype(np.int32, copy=False))
        return out
