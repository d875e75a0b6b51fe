"""PCA then t-SNE embeddings of Grad-CAM descriptors (thesis §3.4, Table 1).

PCA keeps either a fixed number of components (50) or as many as explain a fraction
of the variance (90 %); t-SNE (openTSNE's FFT-accelerated implementation, several times
faster than scikit-learn's at 20k points) maps the result to 2-D. Seeded throughout.
From :data:`FFT_MIN_POINTS` points up, each gradient step is
:mod:`citylens.analysis.tsne_gradient`'s: openTSNE's FFT arithmetic (same interpolation
grid, same sparse attraction) at about half the time per step; smaller maps use
openTSNE's Barnes-Hut gradient, whose cost shrinks with N where the grid's does not.

t-SNE's affinities need each point's ``3 × perplexity`` nearest neighbours. Up to
:data:`EXACT_KNN_MAX` points they are found exactly, by blocked matrix products
(:func:`exact_knn`): at 20k points that is twice as fast as openTSNE's default Annoy
search and, unlike it, misses none (Annoy's recall is ~0.94 at 50k here). Larger
inputs, where the quadratic search no longer pays, use Annoy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from citylens.tables import EMBEDDINGS

__all__ = [
    "EXACT_KNN_MAX",
    "FFT_MIN_POINTS",
    "affinities",
    "embed",
    "embedding_table",
    "exact_knn",
    "pca_label",
    "pca_reduce",
    "tsne",
]

EXACT_KNN_MAX = 60_000  # points; above, Annoy (N log N) beats the exact O(N²) search
# points; below, Barnes-Hut's tree beats the FFT grid's fixed cost per step (one core:
# 48 points 0.1 s vs 4 s, 2k equal at ~6 s, 5k 19 s vs 9 s)
FFT_MIN_POINTS = 2_000


def pca_reduce(x: np.ndarray, keep: int | float, seed: int = 0) -> np.ndarray:
    """Project descriptors on their leading principal components.

    Args:
        x: ``(N, D)`` descriptors.
        keep: an int keeps that many components (capped by N and D); a float in
            (0, 1) keeps the fewest components that explain that fraction of variance.
        seed: random state for the solver.

    Returns:
        float32 ``(N, k)``.
    """
    from sklearn.decomposition import PCA  # ~1 s to import; only embedding tasks need it

    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    if isinstance(keep, float) and not isinstance(keep, bool):
        if not 0.0 < keep < 1.0:
            raise ValueError(f"PCA variance fraction must be in (0, 1), got {keep}")
        if n < 2 or np.allclose(x, x[:1]):
            return np.zeros((n, 1), dtype=np.float32)
        pca = PCA(n_components=keep, svd_solver="full", random_state=seed)
    else:
        k = min(int(keep), n, d)
        if k < 1:
            raise ValueError(f"PCA needs at least one component, got keep={keep}")
        pca = PCA(n_components=k, svd_solver="full", random_state=seed)
    return pca.fit_transform(x).astype(np.float32)


def exact_knn(y: np.ndarray, k: int, block_elems: int = 2**24) -> tuple[np.ndarray, np.ndarray]:
    """Each point's ``k`` nearest other points (Euclidean), found exactly.

    Squared distances come from blocks of rows by one matrix product each
    (``|a|² + |b|² − 2 a·b``, float32); each row's ``k`` smallest are then re-measured
    in float64 from the points themselves (with a few more candidates than ``k``), so
    cancellation in the product cannot misreport a distance, and sorted nearest first
    (ties: the lower index).

    Args:
        y: ``(N, D)`` points, N > k.
        k: Neighbours per point (the point itself excluded).
        block_elems: Distances held at once (memory: ~12 bytes each).

    Returns:
        ``(indices int64 (N, k), distances float64 (N, k))``.
    """
    y64 = np.asarray(y, dtype=np.float64)
    n = len(y64)
    if not 0 < k < n:
        raise ValueError(f"need 0 < k < N, got k={k} for N={n}")
    # centred, so the float32 product loses as little as it can to cancellation
    y32 = np.ascontiguousarray(y64 - y64.mean(0), dtype=np.float32)
    sq = np.einsum("ij,ij->i", y32, y32)
    # a few candidates beyond k, re-measured exactly: a float32 near-tie at the k-th
    # neighbour cannot push out a true one
    m = min(n - 1, k + max(4, k // 8))
    indices = np.empty((n, k), np.int64)
    distances = np.empty((n, k), np.float64)
    step = max(1, block_elems // n)
    for s in range(0, n, step):
        e = min(n, s + step)
        d2 = sq[s:e, None] + sq[None, :] - 2.0 * (y32[s:e] @ y32.T)
        d2[np.arange(e - s), np.arange(s, e)] = np.inf  # not its own neighbour
        near = np.argpartition(d2, m - 1, axis=1)[:, :m]
        exact = ((y64[s:e, None, :] - y64[near]) ** 2).sum(-1)
        order = np.lexsort((near, exact), axis=1)[:, :k]
        indices[s:e] = np.take_along_axis(near, order, 1)
        distances[s:e] = np.sqrt(np.take_along_axis(exact, order, 1))
    return indices, distances


def affinities(y: np.ndarray, perplexity: float, n_jobs: int = 1, seed: int = 0):
    """t-SNE's input affinities P (openTSNE ``PerplexityBasedNN``, symmetrised).

    Over exact nearest neighbours up to :data:`EXACT_KNN_MAX` points, else Annoy's.

    Args:
        y: ``(N, k)`` inputs, N ≥ 2 (neighbours: ``3 × perplexity``, at most N − 1).
        perplexity: Perplexity of each point's neighbourhood.
        n_jobs: Threads.
        seed: Seeds Annoy's trees (large N only).

    Returns:
        ``openTSNE.affinity.PerplexityBasedNN`` (``.P``: sparse ``(N, N)``).
    """
    from openTSNE import affinity
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n > EXACT_KNN_MAX:
        return affinity.PerplexityBasedNN(
            y, perplexity, method="annoy", n_jobs=n_jobs, random_state=seed
        )
    neighbours = PrecomputedNeighbors(*exact_knn(y, min(n - 1, int(3 * perplexity))))
    return affinity.PerplexityBasedNN(perplexity=perplexity, knn_index=neighbours, n_jobs=n_jobs)


def tsne(y: np.ndarray, perplexity: float = 30.0, seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """2-D t-SNE embedding (openTSNE), perplexity capped at (N − 1) / 3 for small N.

    Args:
        y: ``(N, k)`` inputs, N ≥ 4.
        perplexity: Perplexity (capped as above).
        seed: Seed of the initialisation and the neighbour search.
        n_jobs: Threads.

    Returns:
        float32 ``(N, 2)``.
    """
    from openTSNE import TSNE  # heavy import, only when embedding

    from citylens.analysis.tsne_gradient import kl_divergence_fft32, torch_threads

    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    perp = float(min(perplexity, (n - 1) / 3.0))
    model = TSNE(
        n_components=2,
        perplexity=perp,
        # PCA initialisation needs two input dimensions; a single PCA component (90 %
        # of variance can be one) falls back to a seeded random start.
        initialization="pca" if y.shape[1] >= 2 else "random",
        random_state=seed,
        n_jobs=n_jobs,
        verbose=False,
        negative_gradient_method=kl_divergence_fft32 if n >= FFT_MIN_POINTS else "bh",
    )
    with torch_threads(n_jobs):
        fitted = model.fit(y, affinities=affinities(y, perp, n_jobs, seed))
    return np.asarray(fitted, dtype=np.float32)


def embed(
    x: np.ndarray, keep: int | float, perplexity: float = 30.0, seed: int = 0, n_jobs: int = 1
) -> tuple[np.ndarray, int]:
    """PCA (``keep``) then t-SNE.

    Returns:
        ``(points (N, 2), number of PCA components kept)``.
    """
    reduced = pca_reduce(x, keep, seed)
    return tsne(reduced, perplexity, seed, n_jobs), reduced.shape[1]


def pca_label(keep: int | float) -> str:
    """How the embeddings table names a PCA setting: ``"50%"`` (variance) or ``"10"``."""
    return f"{round(keep * 100)}%" if isinstance(keep, float) else str(keep)


def embedding_table(
    image_ids: list[str],
    cities: list[str],
    x: np.ndarray,
    model: str,
    descriptor: str,
    pcas: list,
    perplexity: float,
    seed: int,
) -> pa.Table:
    """t-SNE positions of one model's descriptors, for every PCA setting.

    Args:
        image_ids: ``N`` image ids, the rows of ``x``.
        cities: Their ``N`` cities.
        x: ``(N, D)`` descriptors (D_cam or D_short).
        model: The model's name.
        descriptor: ``d_cam`` or ``d_short``.
        pcas: PCA settings (variance kept as a float, or a number of components).
        perplexity: t-SNE perplexity.
        seed: PCA and t-SNE seed.

    Returns:
        A table with the schema :data:`~citylens.tables.EMBEDDINGS` less ``top_class``;
        empty when there are fewer than 4 images (too few for a t-SNE).
    """
    schema = EMBEDDINGS.remove(EMBEDDINGS.get_field_index("top_class"))
    if len(x) < 4:
        return schema.empty_table()
    parts = []
    for keep in pcas:
        pts, k = embed(x, keep, perplexity, seed)
        n = len(x)
        cols = {
            "model": [model] * n,
            "descriptor": [descriptor] * n,
            "pca": [pca_label(keep)] * n,
            "components": [k] * n,
            "image_id": list(image_ids),
            "city": list(cities),
            "x": pts[:, 0].astype(np.float64),
            "y": pts[:, 1].astype(np.float64),
        }
        parts.append(pa.table(cols, schema=schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()
