"""PCA then t-SNE embeddings of Grad-CAM descriptors (thesis §3.4, Table 1).

PCA keeps either a fixed number of components (50) or as many as explain a fraction
of the variance (90 %); t-SNE (openTSNE's FFT-accelerated implementation, several times
faster than scikit-learn's at 20k points) maps the result to 2-D. Seeded throughout.
"""

from __future__ import annotations

import numpy as np

__all__ = ["embed", "pca_reduce", "tsne"]


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


def tsne(y: np.ndarray, perplexity: float = 30.0, seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """2-D t-SNE embedding (openTSNE), perplexity capped at (N − 1) / 3 for small N.

    Args:
        y: ``(N, k)`` inputs, N ≥ 4.

    Returns:
        float32 ``(N, 2)``.
    """
    from openTSNE import TSNE  # heavy import, only when embedding

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
    )
    return np.asarray(model.fit(y), dtype=np.float32)


def embed(
    x: np.ndarray, keep: int | float, perplexity: float = 30.0, seed: int = 0, n_jobs: int = 1
) -> tuple[np.ndarray, int]:
    """PCA (``keep``) then t-SNE.

    Returns:
        ``(points (N, 2), number of PCA components kept)``.
    """
    reduced = pca_reduce(x, keep, seed)
    return tsne(reduced, perplexity, seed, n_jobs), reduced.shape[1]
