"""Many claims tested at once: Benjamini–Hochberg q-values.

When every object of every city is tested (:mod:`citylens.analysis.claims`), some
p-values are small by chance; rejecting every test whose q-value is at most ``α``
keeps the expected share of false discoveries among the claims made at most ``α``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bh_q_values"]


def bh_q_values(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of a family of tests.

    ``q_(i) = min_{j ≥ i} p_(j) · m / j`` over the p-values sorted ascending, capped at
    1; rejecting every test with ``q ≤ α`` controls the false discovery rate at ``α``
    for independent or positively dependent tests. NaN p-values (tests that could not
    be made) are left out of the family and get NaN.

    Args:
        p_values: ``(m,)`` p-values.

    Returns:
        ``(m,)`` float64 q-values, in the input's order.
    """
    p = np.asarray(p_values, np.float64).reshape(-1)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return q
