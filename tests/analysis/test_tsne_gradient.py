"""t-SNE gradient pieces against exact all-pairs sums and openTSNE's own code."""

import numpy as np
import pytest
import scipy.sparse as sp
from openTSNE import _tsne
from openTSNE.tsne import kl_divergence_fft

from citylens.analysis.tsne_gradient import (
    _interpolation_kernels,
    attraction,
    kl_divergence_fft32,
    lagrange_weights,
    repulsion,
    torch_threads,
)


def _exact_repulsion(y):
    """``Σ_j q_ij² (y_i − y_j)`` and ``Σ_{i≠j} q_ij`` in float64, all pairs."""
    d = y[:, None, :] - y[None, :, :]
    q = 1.0 / (1.0 + (d**2).sum(-1))
    np.fill_diagonal(q, 0.0)
    return ((q**2)[..., None] * d).sum(1), q.sum()


def _embedding(n, span, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(0, span / 6, (n, 2))
    y[: n // 3] += span / 4  # two groups, uneven density
    return y + 37.0  # far from the origin: charges must be centred


def _openTSNE_repulsion(y):
    g = np.zeros_like(y)
    z = _tsne.estimate_negative_gradient_fft_2d(
        y, g, n_interpolation_points=3, min_num_intervals=50, ints_in_interval=1, dof=1
    )
    return -g * z, z


def test_lagrange_weights_reproduce_quadratics():
    u = np.linspace(0, 1, 17)
    w = lagrange_weights(u, 3)
    nodes = (np.arange(3) + 0.5) / 3
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
    for f in (lambda t: t, lambda t: 3 * t**2 - t + 2):
        np.testing.assert_allclose(w @ f(nodes), f(u), atol=1e-12)


def _interpolation_matrix(scaled, n_boxes, n):
    """(N, m²) sparse matrix of each point's Lagrange weights on its box's n × n nodes."""
    m = n_boxes * n
    which = np.minimum(scaled.astype(np.int64), n_boxes - 1)
    wx = lagrange_weights(scaled[:, 0] - which[:, 0], n)
    wy = lagrange_weights(scaled[:, 1] - which[:, 1], n)
    ix = which[:, 0:1] * n + np.arange(n)
    iy = which[:, 1:2] * n + np.arange(n)
    cols = (ix[:, :, None] * m + iy[:, None, :]).reshape(len(scaled), -1)
    rows = np.repeat(np.arange(len(scaled)), n * n)
    vals = (wx[:, :, None] * wy[:, None, :]).reshape(len(scaled), -1)
    return sp.csr_matrix((vals.ravel(), (rows, cols.ravel())), (len(scaled), m * m))


@pytest.mark.parametrize("n", [3, 4])
def test_compiled_spread_and_gather_equal_the_interpolation_matrix(n):
    rng = np.random.default_rng(1)
    n_boxes = 7
    scaled = rng.uniform(0, n_boxes, (400, 2))
    scaled[:5] = [[0, 0], [n_boxes, n_boxes], [n_boxes, 0], [3.0, 3.0], [6.999, 0.001]]
    charges = rng.normal(size=(400, 2))
    m = n_boxes * n
    interp = _interpolation_matrix(scaled, n_boxes, n)
    spread, gather = _interpolation_kernels()

    grid = spread(scaled, charges, n_boxes, n)  # (m, m, 3)
    want = interp.T @ np.column_stack([np.ones(len(scaled)), charges])  # (m², 3)
    np.testing.assert_allclose(grid.reshape(m * m, 3), want, atol=1e-12)

    potential = rng.normal(size=(m, m, 4)).astype(np.float32)
    phi = gather(scaled, potential, n_boxes, n)  # (4, N)
    want = interp @ potential.reshape(m * m, 4).astype(np.float64)
    np.testing.assert_allclose(phi.T, want, atol=1e-12)


@pytest.mark.parametrize("n,span", [(1500, 4.0), (1500, 30.0), (2500, 110.0)])
def test_repulsion_matches_all_pairs_as_closely_as_openTSNE(n, span):
    y = _embedding(n, span)
    force, z = _exact_repulsion(y)
    ours_f, ours_z = repulsion(y)
    ref_f, ref_z = _openTSNE_repulsion(y)
    assert ours_f.shape == (n, 2) and ours_f.dtype == np.float64
    # Z: well within the interpolation's error, and no worse than openTSNE's
    assert abs(ours_z - z) / z < 5e-3
    assert abs(ours_z - z) <= max(abs(ref_z - z) * 1.05, 1e-6 * z)
    # forces: the same interpolation, so the same error as openTSNE's (float32 FFTs
    # add nothing visible), a few % of the typical force at most (the grid's error)
    err = np.linalg.norm(ours_f - force, axis=1)
    ref_err = np.linalg.norm(ref_f - force, axis=1)
    typical = np.median(np.linalg.norm(force, axis=1))
    assert np.median(err) < 5e-2 * typical
    assert np.median(err) <= np.median(ref_err) * 1.05 + 1e-6 * typical


def test_repulsion_of_coincident_points_is_finite():
    y = np.zeros((10, 2))
    force, z = repulsion(y)
    np.testing.assert_allclose(force, 0.0, atol=1e-6)
    assert z == pytest.approx(90.0, rel=1e-3)  # every q_ij = 1


def _affinities(n, seed=0):
    P = sp.random(n, n, density=20 / n, format="csr", random_state=seed)
    P = (P + P.T).tocsr()
    P.data /= P.data.sum()
    return P


def test_attraction_equals_direct_sum():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 5, (300, 2))
    P = _affinities(300)
    out = np.full_like(y, 0.5)  # adds to what is there
    attraction(P.indptr, P.indices, P.data, y, out)
    dense = P.toarray()
    d = y[:, None, :] - y[None, :, :]
    q = 1.0 / (1.0 + (d**2).sum(-1))
    expected = 0.5 + ((dense * q)[..., None] * d).sum(1)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-18)


@pytest.mark.parametrize("eval_error", [False, True])
def test_objective_matches_openTSNE(eval_error):
    y = _embedding(2000, 25.0, seed=2)
    P = _affinities(2000, seed=2)
    params = dict(n_interpolation_points=3, min_num_intervals=50, ints_in_interval=1)
    kl, grad = kl_divergence_fft32(y, P, 1, params, should_eval_error=eval_error)
    ref_kl, ref_grad = kl_divergence_fft(y, P, 1, params, should_eval_error=eval_error)
    scale = np.median(np.linalg.norm(ref_grad, axis=1))
    assert np.median(np.linalg.norm(grad - ref_grad, axis=1)) < 1e-2 * scale
    if eval_error:
        assert kl == pytest.approx(ref_kl, rel=1e-3)


def test_other_embeddings_go_to_openTSNE():
    y = _embedding(500, 10.0)[:, :1].copy()  # 1-D
    P = _affinities(500)
    params = dict(n_interpolation_points=3, min_num_intervals=50, ints_in_interval=1)
    kl, grad = kl_divergence_fft32(y, P, 1, params)
    _, ref = kl_divergence_fft(y, P, 1, params)
    np.testing.assert_array_equal(grad, ref)


def test_torch_threads_restores_the_count():
    import torch

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
