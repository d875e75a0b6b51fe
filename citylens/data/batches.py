"""Training batches from a split stored as blocks, whichever way the blocks are read.

The train stage decodes each split into blocks of 64 images in manifest order. Whether a
trial reads them from Ray's object store or from a copy on its node's disk
(:mod:`citylens.data.block_cache`), :class:`ShuffledBlocks` draws the same seeded order:
a permutation of the blocks per epoch, then a permutation of the images within each
window of ``window`` blocks. The same blocks give the same batches, bit for bit, so a
model trained through either path is the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

__all__ = ["ShuffledBlocks"]

Block = dict  # image uint8 (n, 3, S, S), label int64 (n,), ok bool (n,)


class ShuffledBlocks:
    """Seeded batches over a split's blocks, read a window at a time.

    Args:
        n_blocks: Blocks in the split.
        read: ``read(indices) -> blocks`` (dicts with ``image`` uint8 ``(n, 3, S, S)``,
            ``label`` int64 ``(n,)``, ``ok`` bool ``(n,)``), in the order asked.
        batch_size: Images per batch.
        seed: Shuffle seed; epoch ``e`` uses ``(seed, e)``.
        window: Blocks shuffled together (and held in memory at once).
    """

    def __init__(
        self,
        n_blocks: int,
        read: Callable[[list[int]], list[Block]],
        batch_size: int,
        seed: int = 0,
        window: int = 8,
    ) -> None:
        self.n_blocks, self.read = n_blocks, read
        self.batch_size, self.seed, self.window = batch_size, seed, window

    def _windows(self, order: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(order), self.window):
            blocks = self.read(order[i : i + self.window])
            ok = np.concatenate([np.asarray(b["ok"], bool) for b in blocks])
            images = np.concatenate([np.asarray(b["image"]) for b in blocks])[ok]
            labels = np.concatenate([np.asarray(b["label"]) for b in blocks])[ok]
            yield images, labels

    def epoch(self, e: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: shuffled (seeded by ``e``) for training, in stored order without ``e``.

        Yields:
            ``(uint8 images (B, 3, S, S), int64 labels (B,))`` tensors; images whose
            decoding failed (``ok`` false) are left out.
        """
        rng = np.random.default_rng([self.seed, e]) if e is not None else None
        order = rng.permutation(self.n_blocks) if rng is not None else range(self.n_blocks)
        for images, labels in self._windows(list(order)):
            idx = rng.permutation(len(labels)) if rng is not None else np.arange(len(labels))
            for i in range(0, len(idx), self.batch_size):
                sel = idx[i : i + self.batch_size]
                yield torch.from_numpy(images[sel]), torch.from_numpy(labels[sel])
