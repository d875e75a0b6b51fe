import numpy as np
import pytest

from citylens.analysis.embed import (
    FFT_MIN_POINTS,
    affinities,
    embed,
    exact_knn,
    pca_reduce,
    tsne,
)


def _clusters(n=120, d=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n // 3)
    centres = rng.normal(0, 8, (3, d))
    return centres[labels] + rng.normal(0, 1, (n, d)), labels


def test_pca_fixed_and_variance_fraction():
    rng = np.random.default_rng(0)
    # Three strong directions and faint noise: 90 % of variance needs exactly 3 components.
    basis = np.linalg.qr(rng.normal(size=(30, 3)))[0].T
    x = rng.normal(size=(200, 3)) * [10, 8, 6] @ basis + rng.normal(0, 0.05, (200, 30))
    assert pca_reduce(x, 0.9).shape == (200, 3)
    assert pca_reduce(x, 50).shape == (200, 30)  # capped by the dimension
    assert pca_reduce(x[:10], 50).shape == (10, 10)  # and by the sample count
    with pytest.raises(ValueError):
        pca_reduce(x, 1.5)


@pytest.mark.parametrize("n", [120, 3 * (FFT_MIN_POINTS // 3 + 1)])  # Barnes-Hut, then the FFT step
def test_tsne_is_seeded_and_keeps_clusters(n):
    x, labels = _clusters(n)
    a, k = embed(x, 50, perplexity=30, seed=3)
    b, _ = embed(x, 50, perplexity=30, seed=3)
    assert k == 40 and a.shape == (n, 2)
    np.testing.assert_array_equal(a, b)
    # Every point's nearest neighbour in the map is from its own cluster.
    d = ((a[:, None] - a[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).all()


def test_one_dimensional_input_embeds():
    x, labels = _clusters()
    one = x[:, :1] + labels[:, None] * 100.0
    pts = tsne(one, perplexity=10, seed=1)
    assert pts.shape == (120, 2) and np.isfinite(pts).all()
    np.testing.assert_array_equal(pts, tsne(one, perplexity=10, seed=1))


def test_tsne_small_inputs():
    x, _ = _clusters(n=9)
    assert tsne(x, perplexity=30).shape == (9, 2)  # perplexity capped for tiny N
    with pytest.raises(ValueError, match="at least 4"):
        tsne(x[:3])


def test_exact_knn_equals_all_pairwise_distances_in_float64():
    from scipy.spatial.distance import cdist

    # far from the origin, where |a|² + |b|² − 2 a·b in float32 cancels badly
    y = np.random.default_rng(3).normal(size=(500, 7)) * 50 + 1000
    # tiny blocks: many of them, and the last one short
    idx, dist = exact_knn(y, 10, block_elems=500 * 33)
    d = cdist(y, y)
    np.fill_diagonal(d, np.inf)
    ref_idx = np.argsort(d, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, np.take_along_axis(d, ref_idx, 1), rtol=1e-12)
    assert (np.diff(dist, axis=1) >= 0).all()
    with pytest.raises(ValueError, match="k=500"):
        exact_knn(y, 500)


def test_affinities_equal_opentsnes_own_with_exact_neighbours():
    from openTSNE.affinity import MultiscaleMixture

    y = np.random.default_rng(4).normal(size=(300, 5))
    ours = affinities(y, 10.0).P
    # what openTSNE's TSNE.fit builds itself, with its exact (ball tree) search
    ref = MultiscaleMixture(y, 10.0, method="exact", random_state=0).P
    assert ours.shape == ref.shape == (300, 300)
    np.testing.assert_allclose(ours.toarray(), ref.toarray(), rtol=1e-6, atol=1e-12)
    assert abs(ours.sum() - 1.0) < 1e-9
