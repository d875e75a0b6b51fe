"""t-SNE's gradient for openTSNE's optimiser, twice as fast per step on one core.

A gradient step is attraction along the sparse affinities P plus repulsion from every
point. openTSNE computes both; this module does the same arithmetic, faster:

- *Repulsion* (:func:`repulsion`): the same FFT-accelerated interpolation and grid as
  openTSNE's ``negative_gradient_method="fft"`` (FIt-SNE, Linderman et al., Nature
  Methods 2019). The embedding's bounding square is cut into ``n_boxes`` intervals per
  side (at least ``min_num_intervals``, at most ``ints_in_interval`` units wide), each
  with ``n_interpolation_points`` equispaced nodes; each point spreads its charges onto
  the 3 × 3 nodes of its box by Lagrange interpolation, node potentials are convolutions
  on the uniform grid, and each point reads them back with the same weights. openTSNE's
  wheels convolve with ``numpy.fft`` in float64; here one batched float32 FFT through
  torch (MKL on x86), and spreading and reading back are one compiled (numba) loop
  each over the points, a node's sums side by side in memory. Charges are centred on
  the grid so that ``y_i Σ_j q_ij² − Σ_j q_ij² y_j`` cancels little, and the normaliser
  Z has its own kernel ``q`` instead of being assembled from four large terms, so
  float32 costs no accuracy the interpolation keeps (tests: against exact all-pairs
  sums, next to openTSNE's).
- *Attraction* (:func:`attraction`): ``Σ_j p_ij q_ij (y_i − y_j)`` over P's rows, one
  compiled (numba) loop, half the time of openTSNE's per non-zero.

Pure functions over numpy arrays; :func:`kl_divergence_fft32` plugs into openTSNE as a
``negative_gradient_method`` callable (its extension point). Anything else (1-D, heavy
tails, ``transform`` onto a reference, several threads) goes to openTSNE's own code.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np

EPSILON = float(np.finfo(np.float64).eps)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch's CPU ops (the FFTs here) on ``n`` threads, restoring the count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _smooth_size(n: int) -> int:
    """The smallest integer ≥ n with no prime factor above 5 (fast FFT lengths)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def lagrange_weights(u: np.ndarray, n_interp: int) -> np.ndarray:
    """Lagrange basis at equispaced nodes ``(m + 0.5) / n_interp``, m < n_interp.

    Args:
        u: ``(N,)`` positions inside a box, in [0, 1].
        n_interp: Nodes per box.

    Returns:
        ``(N, n_interp)`` weights; each row sums to 1.
    """
    nodes = (np.arange(n_interp) + 0.5) / n_interp
    w = np.ones((u.shape[0], n_interp))
    for m in range(n_interp):
        for k in range(n_interp):
            if k != m:
                w[:, m] *= (u - nodes[k]) / (nodes[m] - nodes[k])
    return w


def repulsion(
    y: np.ndarray,
    n_interpolation_points: int = 3,
    min_num_intervals: int = 50,
    ints_in_interval: float = 1.0,
) -> tuple[np.ndarray, float]:
    """Repulsive forces of a 2-D t-SNE embedding (Cauchy kernel, one degree of freedom).

    Args:
        y: ``(N, 2)`` embedding.
        n_interpolation_points: Interpolation nodes per box side (openTSNE's default 3).
        min_num_intervals: Fewest boxes per side (50).
        ints_in_interval: Widest box, in embedding units (1).

    Returns:
        ``force`` ``(N, 2)`` float64, ``Σ_j q_ij² (y_i − y_j)``, and the normaliser
        ``Z = Σ_{i≠j} q_ij`` with ``q_ij = 1 / (1 + |y_i − y_j|²)``; t-SNE's repulsive
        gradient is ``−force / Z`` (up to openTSNE's factor 4, folded into its step).
    """
    import torch

    y = np.asarray(y, dtype=np.float64)
    n, p = n_interpolation_points, y.shape[0]
    lo = float(y.min())
    span = max(float(y.max()) - lo, 1e-8)
    n_boxes = max(min_num_intervals, int(span / ints_in_interval))
    n_boxes = _smooth_size(n_boxes)  # 2·n·n_boxes then factors well for the FFT
    box = span / n_boxes
    m = n_boxes * n  # nodes per side; node k sits at lo + (k + 0.5) * box / n

    # each point spreads its charges (1, y − centre) onto its box's n × n nodes
    centre = lo + span / 2  # charges y − centre: small, so little cancellation below
    yc = y - centre
    scaled = (y - lo) / box
    spread, gather = _interpolation_kernels()
    # one buffer of five planes, transformed together and multiplied in place:
    # charges 1, kernels q and q², charges y₁ and y₂ (each zero-padded to 2m × 2m)
    planes = torch.zeros(5, 2 * m, 2 * m)
    sums = torch.from_numpy(spread(scaled, yc, n_boxes, n))  # (m, m, 3)
    planes[0, :m, :m] = sums[..., 0]
    planes[3:, :m, :m] = sums[..., 1:].permute(2, 0, 1)
    del sums

    # kernels on node offsets, laid out for a circular convolution of size 2m
    step = box / n
    offsets = np.concatenate([np.arange(m), [0], np.arange(-m + 1, 0)]) * step
    sq = torch.from_numpy(offsets).float() ** 2
    q = planes[1]
    torch.add(sq[:, None], sq[None, :], out=q).add_(1.0).reciprocal_()
    torch.mul(q, q, out=planes[2])
    planes[1:3, m, :] = 0.0  # offset ±m never pairs two nodes
    planes[1:3, :, m] = 0.0

    spectra = torch.fft.rfft2(planes)  # (5, 2m, m + 1)
    del planes, q
    # in place, so that planes 1-4 become q * 1 (for Z); q² * 1, q² * y₁, q² * y₂
    spectra[3:] *= spectra[2]
    spectra[1:3] *= spectra[0]
    potential = torch.fft.irfft2(spectra[1:], s=(2 * m, 2 * m))[:, :m, :m]
    del spectra

    phi = gather(scaled, potential.permute(1, 2, 0).contiguous().numpy(), n_boxes, n)  # (4, N)
    z = float(phi[0].sum()) - p  # each point's own q_ii = 1 is in its potential
    force = yc * phi[1][:, None] - phi[2:].T  # a new C-ordered (N, 2) array
    return force, z


@functools.cache
def _interpolation_kernels():  # noqa: PLR0915 (two numba kernels, compiled together)
    """Compiled (numba) spreading of charges onto the grid and reading potentials back.

    A point at ``scaled`` (box units from the grid's corner) lies in box
    ``b = min(⌊scaled⌋, n_boxes − 1)`` per axis and touches that box's ``n`` nodes per
    axis, ``b·n + a``, with the weights :func:`lagrange_weights` gives. One loop over
    the points, instead of a sparse (N, m²) matrix built every step: at 150k points that
    matrix's construction and two products were half the step. Both loops locate a
    point in the same four lines, written out in each: a shared compiled helper that
    returns the box made a 150k-point call ~60 % slower (19 → 31 ms).
    """
    import numba

    @numba.njit(cache=False, nogil=True)
    def inverse_denominators(n):  # pragma: no cover - compiled
        # nodes (k + 0.5) / n are equispaced: node_a − node_k = (a − k) / n
        inv = np.empty(n)
        for a in range(n):
            d = 1.0
            for k in range(n):
                if k != a:
                    d *= a - k
            inv[a] = 1.0 / d
        return inv

    @numba.njit(cache=False, nogil=True)
    def weights(u, inv, out):  # pragma: no cover - compiled
        # w_a = Π_{k≠a} (u − node_k) / (node_a − node_k), in node units
        n = out.shape[0]
        t = u * n - 0.5
        for a in range(n):
            w = inv[a]
            for k in range(n):
                if k != a:
                    w *= t - k
            out[a] = w

    @numba.njit(cache=False, nogil=True)
    def spread(scaled, charges, n_boxes, n):  # pragma: no cover - compiled
        # charges (N, 2); grid (m, m, 3): sums of w, w·charge₀, w·charge₁ per node
        m = n_boxes * n
        grid = np.zeros((m, m, 3), np.float64)  # a node's three sums side by side
        wx = np.empty(n)
        wy = np.empty(n)
        inv = inverse_denominators(n)
        for i in range(scaled.shape[0]):
            bx = min(int(scaled[i, 0]), n_boxes - 1)
            by = min(int(scaled[i, 1]), n_boxes - 1)
            weights(scaled[i, 0] - bx, inv, wx)
            weights(scaled[i, 1] - by, inv, wy)
            q1, q2 = charges[i, 0], charges[i, 1]
            for a in range(n):
                for b in range(n):
                    w = wx[a] * wy[b]
                    node = grid[bx * n + a, by * n + b]
                    node[0] += w
                    node[1] += w * q1
                    node[2] += w * q2
        return grid

    @numba.njit(cache=False, nogil=True)
    def gather(scaled, potential, n_boxes, n):  # pragma: no cover - compiled
        # potential (m, m, 4): a node's four potentials side by side
        phi = np.empty((4, scaled.shape[0]), np.float64)
        wx = np.empty(n)
        wy = np.empty(n)
        inv = inverse_denominators(n)
        for i in range(scaled.shape[0]):
            bx = min(int(scaled[i, 0]), n_boxes - 1)
            by = min(int(scaled[i, 1]), n_boxes - 1)
            weights(scaled[i, 0] - bx, inv, wx)
            weights(scaled[i, 1] - by, inv, wy)
            p0 = p1 = p2 = p3 = 0.0
            for a in range(n):
                for b in range(n):
                    w = wx[a] * wy[b]
                    node = potential[bx * n + a, by * n + b]
                    p0 += w * node[0]
                    p1 += w * node[1]
                    p2 += w * node[2]
                    p3 += w * node[3]
            phi[0, i] = p0
            phi[1, i] = p1
            phi[2, i] = p2
            phi[3, i] = p3
        return phi

    return spread, gather


def attraction(
    indptr: np.ndarray, indices: np.ndarray, p: np.ndarray, y: np.ndarray, out: np.ndarray
) -> None:
    """Adds t-SNE's attractive forces ``Σ_j p_ij q_ij (y_i − y_j)`` to ``out``.

    Args:
        indptr: P's CSR row pointers, ``(N + 1,)``.
        indices: P's CSR column indices, ``(nnz,)``.
        p: P's CSR values, ``(nnz,)`` float64.
        y: ``(N, 2)`` float64 embedding.
        out: ``(N, 2)`` float64, updated in place.
    """
    _attraction_kernel()(indptr, indices, p, np.ascontiguousarray(y, np.float64), out)


@functools.cache
def _attraction_kernel():
    """The compiled loop (numba, compiled once per process: ~0.5 s)."""
    import numba

    @numba.njit(cache=False, nogil=True)
    def kernel(indptr, indices, p, y, out):  # pragma: no cover - compiled
        for i in range(indptr.shape[0] - 1):
            y0, y1 = y[i, 0], y[i, 1]
            f0 = 0.0
            f1 = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                d0 = y0 - y[j, 0]
                d1 = y1 - y[j, 1]
                w = p[k] / (1.0 + d0 * d0 + d1 * d1)
                f0 += w * d0
                f1 += w * d1
            out[i, 0] += f0
            out[i, 1] += f1

    return kernel


def kl_divergence_fft32(
    embedding: np.ndarray,
    P,
    dof: float = 1,
    fft_params: dict | None = None,
    reference_embedding=None,
    should_eval_error: bool = False,
    n_jobs: int = 1,
    **kwargs,
):
    """OpenTSNE's objective (KL divergence and its gradient) from our own kernels.

    The gradient is :func:`repulsion` plus :func:`attraction`.

    Same contract as ``openTSNE.tsne.kl_divergence_fft``: returns ``(kl, gradient)``
    with gradient ``(N, 2)`` float64 (kl is 0 unless ``should_eval_error``). Embeddings
    other than a fresh 2-D one with one degree of freedom go to openTSNE's
    implementation; so does attraction on several threads or when KL is wanted.
    """
    from openTSNE import _tsne
    from openTSNE.tsne import kl_divergence_fft

    fft_params = fft_params or {}
    if (
        reference_embedding is not None
        or dof != 1
        or np.ndim(embedding) != 2
        or (embedding.shape[1] != 2)
    ):
        return kl_divergence_fft(
            embedding,
            P,
            dof,
            fft_params,
            reference_embedding=reference_embedding,
            should_eval_error=should_eval_error,
            n_jobs=n_jobs,
            **kwargs,
        )
    force, sum_q = repulsion(embedding, **fft_params)
    gradient = -force / sum_q
    if n_jobs <= 1 and not should_eval_error:
        attraction(P.indptr, P.indices, P.data, embedding, gradient)
        return 0.0, gradient
    sum_p, kl = _tsne.estimate_positive_gradient_nn(
        P.indices,
        P.indptr,
        P.data,
        embedding,
        embedding,
        gradient,
        dof,
        num_threads=n_jobs,
        should_eval_error=should_eval_error,
    )
    if should_eval_error:
        kl += sum_p * np.log(sum_q + EPSILON)
    return kl, gradient
