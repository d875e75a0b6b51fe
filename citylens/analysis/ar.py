"""Average residual (AR) between the weighted masks of two models (paper eq. 2).

AR(m1, m2) for one image = mean over a common H×W grid of |mask_m1 − mask_m2|, both
masks upsampled bilinearly (half-pixel centres) and re-normalised to [0, 1] on that grid.
0: identical masks; 1: opposite.

Computed without materialising either upsampled mask (this is the analyze stage's
hottest loop: 150k images × every model pair on a 224×224 grid):

- bilinear resizing is linear with rows summing to one, so re-normalising the upsampled
  mask, ``k·(R_h m R_wᵀ) + c``, equals upsampling the re-normalised small mask
  ``R_h (k·m + c) R_wᵀ``;
- ``k`` and ``c`` need the upsampled mask's minimum and maximum, and a bilinear surface
  takes its extremes over a grid at the first or last grid line of each source
  interval: a ``≤ 2(h+1) × 2(w+1)`` sub-grid gives them exactly;
- the difference of the two masks is one product ``[R_h^a R_h^b] · diag(m_a′, −m_b′) ·
  [R_w^a R_w^b]ᵀ``, computed a chunk of images at a time so it stays in cache.

A mask whose values are all equal and positive gives ones on any grid (rounding in the
resize must not turn it into noise). ``citylens.masks.upsample_masks`` (upsample, then
normalise) is the plain reference the
tests compare with.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pyarrow as pa
import torch

from citylens.analysis.bootstrap import percentile_interval, safe_ratio
from citylens.masks import bilinear_matrix, constant_positive
from citylens.tables import AR_PAIRS

__all__ = ["average_residual", "normalized_small", "pair_table", "pairwise_ar"]

_CHUNK = 64  # images per product: a few MB at 224×224, cache-sized


@functools.lru_cache(maxsize=64)
def _extreme_lines(n_in: int, n_out: int) -> torch.Tensor:
    """Output lines that are first or last of their source interval.

    A bilinear surface sampled on the output grid takes its extremes on these lines.
    """
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5).clamp_(min=0)
    cell = src.floor().long()
    first = torch.ones(n_out, dtype=torch.bool)
    first[1:] = cell[1:] != cell[:-1]
    last = torch.ones(n_out, dtype=torch.bool)
    last[:-1] = cell[:-1] != cell[1:]
    return torch.nonzero(first | last).flatten()


def normalized_small(masks: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """Masks re-normalised as they would be after upsampling to ``grid``, kept small.

    Args:
        masks: ``(B, h, w)`` masks (≥ 0).
        grid: ``(H, W)``.

    Returns:
        float32 ``(B, h, w)`` ``k·m + c`` such that upsampling it to ``grid`` gives
        ``upsample_masks(masks, grid)``: min-max normalised on the grid; an all-zero mask
        gives zeros, a constant positive one gives ones.
    """
    m = torch.as_tensor(masks, dtype=torch.float32)
    h, w = m.shape[-2:]
    rows = bilinear_matrix(h, grid[0])[_extreme_lines(h, grid[0])]
    cols = bilinear_matrix(w, grid[1])[_extreme_lines(w, grid[1])]
    lo, hi = torch.aminmax((rows @ m @ cols.T).flatten(1), dim=1)
    span = hi - lo
    empty = hi <= 0
    flat = ((span <= torch.finfo(torch.float32).eps * hi.abs()) & ~empty) | constant_positive(m)
    scaled = ~empty & ~flat
    k = torch.where(scaled, 1.0 / torch.where(scaled, span, torch.ones_like(span)), 0.0)
    c = torch.where(flat, 1.0, -lo * k)
    return m * k[:, None, None] + c[:, None, None]


def _ar_small(a: torch.Tensor, b: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """AR from two batches of normalised small masks (see :func:`normalized_small`)."""
    (ha, wa), (hb, wb) = a.shape[-2:], b.shape[-2:]
    left = torch.cat([bilinear_matrix(ha, grid[0]), bilinear_matrix(hb, grid[0])], dim=1)
    right = torch.cat([bilinear_matrix(wa, grid[1]), bilinear_matrix(wb, grid[1])], dim=1).T
    out = np.empty(len(a), np.float64)
    block = torch.zeros(min(_CHUNK, len(a)), ha + hb, wa + wb)
    for s in range(0, len(a), _CHUNK):
        n = min(_CHUNK, len(a) - s)
        block[:n, :ha, :wa] = a[s : s + n]
        block[:n, ha:, wa:] = -b[s : s + n]
        diff = left @ block[:n] @ right  # (n, H, W): upsampled mask a − mask b
        out[s : s + n] = diff.abs_().mean(dim=(-2, -1)).double().numpy()
    return out


def average_residual(
    masks_a: torch.Tensor | np.ndarray,
    masks_b: torch.Tensor | np.ndarray,
    grid: tuple[int, int],
) -> np.ndarray:
    """Per-image AR between two models' masks of the same images.

    Args:
        masks_a: ``(B, h1, w1)`` mask_norm of model 1.
        masks_b: ``(B, h2, w2)`` mask_norm of model 2 (same images, same order).
        grid: ``(H, W)`` common grid, e.g. the model input size.

    Returns:
        float64 ``(B,)`` AR in [0, 1].
    """
    if len(masks_a) != len(masks_b):
        raise ValueError(f"mask batches differ: {len(masks_a)} vs {len(masks_b)} images")
    grid = (int(grid[0]), int(grid[1]))
    return _ar_small(normalized_small(masks_a, grid), normalized_small(masks_b, grid), grid)


def pairwise_ar(
    masks: dict[str, torch.Tensor | np.ndarray], grid: tuple[int, int]
) -> dict[tuple[str, str], np.ndarray]:
    """AR for every unordered pair of models over the same batch of images.

    Each model's masks are normalised once.

    Args:
        masks: model name -> ``(B, h, w)`` mask_norm; all for the same B images.
        grid: common ``(H, W)`` grid.

    Returns:
        ``{(m1, m2): (B,) AR}`` for ``m1 < m2`` in sorted order.
    """
    grid = (int(grid[0]), int(grid[1]))
    small = {name: normalized_small(m, grid) for name, m in sorted(masks.items())}
    return {
        (m1, m2): _ar_small(small[m1], small[m2], grid)
        for m1, m2 in itertools.combinations(small, 2)
    }


def pair_table(sums: dict, arch_of: dict[str, str], ci: float = 0.95, places=None) -> pa.Table:
    """Mean AR per model pair (paper Table 2) from ``{(m1, m2): [Σ AR, Σ AR², n, ...]}``.

    ``kind`` is ``seeds`` for two seeds of one architecture, else ``architectures``.

    Args:
        sums: Per pair ``[Σ AR, Σ AR², n]``, optionally followed by the resampled
            ``Σ_w AR (B,)`` and ``Σ_w n (B,)`` (then ``ci_low, ci_high`` are filled).
        arch_of: model -> architecture.
        ci: Interval coverage.
        places: The number of test places resampled (``n_places``).

    Returns:
        A table with schema :data:`~citylens.tables.AR_PAIRS`, pairs in sorted order.
    """
    rows = []
    for (a, b), values in sorted(sums.items()):
        s, s2, n = values[:3]
        mean = s / n
        std = float(np.sqrt(max(s2 / n - mean * mean, 0.0)))
        same = arch_of[a] == arch_of[b]
        low = high = np.nan
        if len(values) > 3 and len(values[3]):
            low, high = percentile_interval(safe_ratio(values[3], values[4]), ci, places)
        rows.append(
            {
                "model_a": a,
                "model_b": b,
                "arch_a": arch_of[a],
                "arch_b": arch_of[b],
                "kind": "seeds" if same else "architectures",
                "mean_ar": float(mean),
                "std_ar": std,
                "images": int(n),
                "ci_low": float(low),
                "ci_high": float(high),
                "n_places": places,
            }
        )
    return pa.Table.from_pylist(rows, schema=AR_PAIRS)
