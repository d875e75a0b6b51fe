import numpy as np
import pytest

from citylens.analysis.embed import embed, pca_reduce, tsne


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


def test_tsne_is_seeded_and_keeps_clusters():
    x, labels = _clusters()
    a, k = embed(x, 50, perplexity=30, seed=3)
    b, _ = embed(x, 50, perplexity=30, seed=3)
    assert k == 40 and a.shape == (120, 2)
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
