"""Which explanations a person annotates: a stratified, seeded sample.

Annotation time is scarce (the thesis's 1,000 explanations took days), so the sample
spreads it evenly over the strata a reader compares — each (model, city, θ) gets the
same share — rather than in proportion to their sizes, where a large city or the
common θ would take most of it. A stratum with fewer explanations than its share gives
all it has, and the rest of the share is dealt to the others.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["allocate", "stratified_sample"]


def allocate(sizes: Sequence[int], n: int, order: Sequence[int] | None = None) -> np.ndarray:
    """How many items each stratum gives to a sample of ``n``: as equal as sizes allow.

    Every stratum gets ``min(size, L)`` or ``min(size, L) + 1`` for a common level
    ``L``; the strata that get the extra one are the first in ``order`` among those with
    room for it.

    Args:
        sizes: ``(S,)`` items per stratum.
        n: Sample size (capped at the total).
        order: A permutation of the strata deciding who gets remainders (default 0..S-1).

    Returns:
        ``(S,)`` int counts summing to ``min(n, sum(sizes))``.
    """
    sizes = np.asarray(sizes, np.int64)
    if n < 0 or (sizes < 0).any():
        raise ValueError("n and sizes must be ≥ 0")
    order = np.arange(len(sizes)) if order is None else np.asarray(order)
    take = np.zeros(len(sizes), np.int64)
    left = min(int(n), int(sizes.sum()))
    while left > 0:
        room = [k for k in order if take[k] < sizes[k]]
        share = left // len(room)
        if share == 0:
            for k in room[:left]:
                take[k] += 1
            break
        for k in room:
            got = min(share, sizes[k] - take[k])
            take[k] += got
            left -= got
    return take


def stratified_sample(
    strata: Sequence[Hashable], ids: Sequence[str], n: int, seed: int = 0
) -> np.ndarray:
    """Indices of ``n`` candidates, spread evenly over strata, in a mixed order.

    Deterministic for a seed: the same candidates (in any input order) give the same
    sample in the same order. Within a stratum, candidates are drawn at random without
    replacement; the returned order interleaves strata at random, so an annotator does
    not see one model's or city's explanations in a row.

    Args:
        strata: ``(N,)`` each candidate's stratum (e.g. ``(model, city, θ)``).
        ids: ``(N,)`` unique candidate ids (e.g. ``image_id|model|θ``), fixing the order
            draws are made from.
        n: Sample size (all candidates when there are fewer).
        seed: The sample's seed.

    Returns:
        ``(min(n, N),)`` int64 indices into the candidates.
    """
    if len(strata) != len(ids):
        raise ValueError(f"{len(strata)} strata for {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ValueError("candidate ids must be unique")
    rng = np.random.default_rng(seed)
    keys = sorted(set(strata), key=repr)
    members = {k: [] for k in keys}
    for i in sorted(range(len(ids)), key=lambda i: ids[i]):
        members[strata[i]].append(i)
    sizes = [len(members[k]) for k in keys]
    take = allocate(sizes, n, rng.permutation(len(keys)))
    chosen = []
    for k, t in zip(keys, take):
        pool = np.asarray(members[k], np.int64)
        chosen.append(pool[rng.permutation(len(pool))[:t]])
    out = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    return out[rng.permutation(len(out))]
