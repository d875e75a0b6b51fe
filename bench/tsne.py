"""t-SNE: citylens's embedding (openTSNE, FFT) vs scikit-learn's, and the PCA step.

    python bench/tsne.py [--points 5000 20000 50000] [--sklearn 5000 20000] [--dim 196]

Descriptors are synthetic: ``--dim``-dimensional (VGG11's D_cam at 224 px is 14×14 =
196) points around 10 cluster centres, like descriptors of images of a few kinds. Per
size, one core each (an analyze task holds one CPU):

- *PCA*: :func:`citylens.analysis.embed.pca_reduce` to 50 components and to 90 % of
  the variance;
- *citylens t-SNE*: :func:`citylens.analysis.embed.tsne` on the 50 components
  (openTSNE: 250 early-exaggeration + 500 iterations, PCA initialisation);
- *scikit-learn*: ``sklearn.manifold.TSNE`` (Barnes-Hut) with the same perplexity,
  initialisation and number of iterations (750).

Both embeddings are scored by how many of each point's 10 nearest neighbours in the
input are among its 10 nearest in 2-D (a speed-up that ruins the map would show).
scikit-learn runs only at the ``--sklearn`` sizes (at 50k it takes most of an hour here).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, fmt_rate, machine, print_table, row  # noqa: E402

from citylens.analysis.embed import pca_reduce, tsne  # noqa: E402


def descriptors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``(n, dim)`` float32 points around 10 centres (non-negative, like D_cam)."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(2.0, 1.0, (10, dim))
    which = rng.integers(0, 10, n)
    return np.abs(centres[which] + rng.normal(0, 0.6, (n, dim))).astype(np.float32)


def knn_kept(x: np.ndarray, y: np.ndarray, k: int = 10, sample: int = 2000) -> float:
    """Mean share of a point's k nearest neighbours in ``x`` that stay among its k in ``y``."""
    from sklearn.neighbors import NearestNeighbors

    idx = np.random.default_rng(0).choice(len(x), min(sample, len(x)), replace=False)
    nx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x[idx], return_distance=False)
    ny = NearestNeighbors(n_neighbors=k + 1).fit(y).kneighbors(y[idx], return_distance=False)
    return float(np.mean([len(set(a[1:]) & set(b[1:])) / k for a, b in zip(nx, ny)]))


def sklearn_tsne(y: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        random_state=seed,
        max_iter=750,
        n_jobs=1,
    ).fit_transform(y)


def measure(points: list[int], sklearn_at: list[int], dim: int) -> list[dict]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one core (BLAS and OpenMP), like one analyze task
        return _measure(points, sklearn_at, dim)


def _measure(points: list[int], sklearn_at: list[int], dim: int) -> list[dict]:
    rows = []
    for n in points:
        x = descriptors(n, dim)
        t = time.perf_counter()
        reduced = pca_reduce(x, 50)
        t_pca50 = time.perf_counter() - t
        t = time.perf_counter()
        k90 = pca_reduce(x, 0.9).shape[1]
        t_pca90 = time.perf_counter() - t
        rows.append(
            row(
                "t-SNE",
                f"PCA {dim}→50 and →90 % ({k90}), {n:,} points",
                n / (t_pca50 + t_pca90),
                "points/s",
                note=f"{t_pca50:.1f} s + {t_pca90:.1f} s",
            )
        )
        with PeakMemory() as mem:
            t = time.perf_counter()
            ours = tsne(reduced)
            t_ours = time.perf_counter() - t
        kept = knn_kept(reduced, ours)
        compared = {"note": f"{t_ours:.0f} s, 10-NN kept {kept:.2f}; scikit-learn not run"}
        if n in sklearn_at:
            with PeakMemory() as mem_ref:
                t = time.perf_counter()
                ref = sklearn_tsne(reduced)
                t_ref = time.perf_counter() - t
            compared = {
                "reference": f"scikit-learn {n / t_ref:.0f} points/s, {mem_ref.peak_mb:.0f} MB",
                "ratio": t_ref / t_ours,
                "target": 5.0 if n == 20_000 else None,
                "note": (
                    f"{t_ours:.0f} s vs {t_ref:.0f} s; 10-NN kept {kept:.2f} vs "
                    f"{knn_kept(reduced, ref):.2f}"
                ),
            }
        rows.append(
            row(
                "t-SNE",
                f"openTSNE, {n:,} points",
                n / t_ours,
                "points/s",
                peak_mb=mem.peak_mb,
                **compared,
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", nargs="+", type=int, default=[5_000, 20_000, 50_000])
    ap.add_argument("--sklearn", nargs="*", type=int, default=[5_000, 20_000])
    ap.add_argument("--dim", type=int, default=196)
    ap.add_argument("--json", action="store_true", help="rows for bench/all.py")
    args = ap.parse_args()
    rows = measure(args.points, args.sklearn, args.dim)
    if args.json:
        emit(rows)
        return
    print(f"t-SNE, one core; {machine()}\n")
    print_table(
        ["case", "points/s", "vs scikit-learn", "note"],
        [
            [r["case"], fmt_rate(r["rate"]), f"{r['ratio']:.1f}x" if r["ratio"] else "", r["note"]]
            for r in rows
        ],
    )


if __name__ == "__main__":
    main()
