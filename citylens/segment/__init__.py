"""Segmenters: registry by name (``labels``, ``ade20k-ppm``, ``ade20k-upernet``)."""

from __future__ import annotations

from citylens.segment.base import Segmenter
from citylens.segment.labels import LabelsSegmenter
from citylens.segment.model import PPMSegmenter, UPerNetSegmenter
from citylens.vocabulary import Vocabulary

__all__ = ["SEGMENTERS", "Segmenter", "build_segmenter", "vocabulary_of"]

SEGMENTERS: dict[str, type] = {
    "labels": LabelsSegmenter,
    "ade20k-ppm": PPMSegmenter,
    "ade20k-upernet": UPerNetSegmenter,
}


def vocabulary_of(backend: str, classes: str | None = None) -> Vocabulary:
    """A backend's vocabulary, without loading its weights."""
    return SEGMENTERS[backend].default_vocabulary(classes)


def build_segmenter(
    backend: str, weights: str | None = None, classes: str | None = None, **options
) -> Segmenter:
    """Instantiate a segmenter by registry name.

    Args:
        backend: Registry name.
        weights: Path/URI of model weights (model backends).
        classes: Class-file text overriding the backend's vocabulary.
        **options: Backend options (model backends: scales, max_size, precision,
            batch_size, device, storage_options).
    """
    if backend not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {backend!r}; choose from {', '.join(SEGMENTERS)}")
    return SEGMENTERS[backend](weights=weights, classes=classes, **options)
