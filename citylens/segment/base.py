"""The segmenter protocol: a name, an ordered vocabulary, and batched class maps."""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np

from citylens.vocabulary import Vocabulary

__all__ = ["Segmenter"]


class Segmenter(Protocol):
    """Turns images (or the label maps that come with them) into class maps.

    Attributes:
        name: Registry name, recorded in the segments table.
        vocabulary: Class names and colours; class maps index into it.
        input_kind: ``"image"`` (decoded RGB is passed) or ``"labels"`` (the dataset's
            own label maps are passed).
    """

    name: ClassVar[str]
    input_kind: ClassVar[str]
    vocabulary: Vocabulary

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Class maps for a batch.

        Args:
            inputs: ``input_kind == "image"``: uint8 ``(H, W, 3)`` images;
                ``"labels"``: integer ``(H, W)`` label maps.

        Returns:
            One int ``(H', W')`` class map per input, values in ``[0, len(vocabulary))``.
        """
        ...
