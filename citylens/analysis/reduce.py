"""Per-shard reducers behind the *analyze* stage: Arrow tables in, small partial sums out.

Columns of lists (masks, pixel counts) are read as one flat numpy buffer each and
reshaped, never converted row by row to Python lists: a shard of 1,000 images × 12
models is a few array operations, and memory per shard is the shard's own columns.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.analysis.ar import pairwise_ar
from citylens.analysis.bootstrap import Resamples
from citylens.tables import AR_IMAGES, TOPS

__all__ = [
    "accuracy_sums",
    "add_sums",
    "ar_of_table",
    "list_matrix",
    "masks_of_model",
    "sums_of_table",
]


def add_sums(total: dict, part: dict) -> dict:
    """Add one shard's partial sums into ``total`` (returned), key by key.

    Each value is a list of numbers and arrays (``[Σ AR, Σ AR², n, ...]``,
    ``[Σ M, Σ N, images, ...]``), added element by element; ``part`` is not changed.
    """
    for key, values in part.items():
        if key not in total:
            total[key] = [
                np.array(v, copy=True) if isinstance(v, np.ndarray) else v for v in values
            ]
            continue
        acc = total[key]
        if len(acc) != len(values):
            raise ValueError(f"{key}: partial sums of different shapes")
        for i, v in enumerate(values):
            acc[i] = acc[i] + v
    return total


def list_matrix(column: pa.ChunkedArray | pa.Array, dtype=None) -> np.ndarray:
    """A list column whose rows all have length ``L`` as an ``(N, L)`` array (one copy).

    Raises:
        ValueError: rows of different lengths.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    if n == 0:
        return flat.reshape(0, 0) if dtype is None else flat.astype(dtype).reshape(0, 0)
    if flat.size % n or np.any(pc.list_value_length(arr).to_numpy() != flat.size // n):
        raise ValueError("list column rows differ in length")
    out = flat.reshape(n, flat.size // n)
    return out if dtype is None else out.astype(dtype, copy=False)


def masks_of_model(t: pa.Table, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One model's masks from an explanations table, sorted by image id.

    Args:
        t: rows with ``image_id, city, model, cam_h, cam_w, mask``.
        model: The model's name.

    Returns:
        ``(image ids (n,) object, cities (n,) object, masks float32 (n, h, w))``.
    """
    sel = t.filter(pc.equal(t["model"], model))
    sel = sel.take(pc.sort_indices(sel["image_id"]))
    h = np.unique(sel["cam_h"].to_numpy())
    w = np.unique(sel["cam_w"].to_numpy())
    if len(h) != 1 or len(w) != 1:
        raise ValueError(f"{model}: masks of different sizes in one shard")
    masks = list_matrix(sel["mask"], np.float32).reshape(-1, int(h[0]), int(w[0]))
    ids = np.asarray(sel["image_id"].to_numpy(zero_copy_only=False), dtype=object)
    cities = np.asarray(sel["city"].to_numpy(zero_copy_only=False), dtype=object)
    return ids, cities, masks


def ar_of_table(
    t: pa.Table, grid: int, resamples: Resamples | None = None
) -> tuple[pa.Table, dict]:
    """Per-image AR for every model pair of one explanations shard.

    Args:
        t: rows with ``image_id, city, model, cam_h, cam_w, mask``.
        grid: side of the common grid the masks are compared on.
        resamples: The study's place resamples; with them each pair's sums go on with
            ``Σ_w AR (B,)`` and ``Σ_w n (B,)``.

    Returns:
        ``(rows with schema AR_IMAGES, {(m1, m2): [Σ AR, Σ AR², n]})``; pairs in sorted
        order, each over the images both models explained, in image-id order.
    """
    models = sorted(set(t["model"].to_pylist()))
    per = {m: masks_of_model(t, m) for m in models}
    parts, sums = [], {}
    if resamples is not None and models:  # places of the shard's images, once for all pairs
        shard_ids = np.unique(np.concatenate([per[m][0] for m in models]).astype(str))
        shard_place = resamples.place_of(shard_ids.tolist())
    for a, b in itertools.combinations(models, 2):
        ids_a, cities_a, masks_a = per[a]
        ids_b, _, masks_b = per[b]
        common, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
        if not len(common):
            continue
        ars = pairwise_ar({a: masks_a[ia], b: masks_b[ib]}, (grid, grid))[(a, b)]
        parts.append(
            pa.table(
                {
                    "image_id": pa.array(common.tolist(), pa.string()),
                    "city": pa.array(cities_a[ia].tolist(), pa.string()),
                    "model_a": pa.array([a] * len(common), pa.string()),
                    "model_b": pa.array([b] * len(common), pa.string()),
                    "ar": pa.array(ars, pa.float64()),
                },
                schema=AR_IMAGES,
            )
        )
        sums[(a, b)] = [float(ars.sum()), float((ars * ars).sum()), len(ars)]
        if resamples is not None:
            place = shard_place[np.searchsorted(shard_ids, common.astype(str))]
            sums[(a, b)] += [
                resamples.weighted(place, ars),
                resamples.weighted(place, np.ones(len(ars))),
            ]
    table = pa.concat_tables(parts) if parts else AR_IMAGES.empty_table()
    return table, sums


def accuracy_sums(
    t: pa.Table, cities: list[str], resamples: Resamples | None = None
) -> dict[str, list]:
    """Correct predictions per model over one explanations shard.

    Args:
        t: rows with ``image_id, city, model, pred``.
        cities: The study's cities in class order (``pred`` indexes them).
        resamples: The study's place resamples (adds ``Σ_w correct (B,)``, ``Σ_w n (B,)``).

    Returns:
        ``{model: [correct, n]}`` (and the resampled sums), models sorted.
    """
    label = {c: i for i, c in enumerate(cities)}
    truth = np.asarray([label[c] for c in t["city"].to_pylist()], np.int64)
    correct = (t["pred"].to_numpy().astype(np.int64) == truth).astype(np.float64)
    model = np.asarray(t["model"].to_pylist(), dtype=object)
    place = resamples.place_of(t["image_id"]) if resamples is not None and t.num_rows else None
    out = {}
    for name in sorted(set(model.tolist())):
        sel = model == name
        out[name] = [int(correct[sel].sum()), int(sel.sum())]
        if place is not None:
            out[name] += [
                resamples.weighted(place[sel], correct[sel]),
                resamples.weighted(place[sel], np.ones(int(sel.sum()))),
            ]
    return out


def sums_of_table(t: pa.Table, resamples: Resamples | None = None) -> tuple[dict, pa.Table]:
    """Pixel sums per (model, city, θ) and each row's top class inside its explanation.

    Args:
        t: an overlaps table (``model, city, theta, image_id, class_pixels_in_mask,
            class_pixels``).
        resamples: The study's place resamples; with them each key also gets the sums
            under every resample.

    Returns:
        ``({(model, city, θ rounded to 1e-6): [Σ M (C,) int64, Σ N (C,) int64, images]},
        rows with schema TOPS)``; with ``resamples`` each list goes on with ``Σ_w M
        (B, C)``, ``Σ_w N (B, C)`` and ``Σ_w images (B,)``, float64. The top class is the
        class with most pixels inside the explanation, ``other`` (0) excepted; 0 when
        no object is inside.
    """
    if t.num_rows == 0:
        return {}, TOPS.empty_table()
    m = list_matrix(t["class_pixels_in_mask"], np.int64)
    n = list_matrix(t["class_pixels"], np.int64)
    model_codes = t["model"].combine_chunks().dictionary_encode()
    city_codes = t["city"].combine_chunks().dictionary_encode()
    thetas = np.round(t["theta"].to_numpy().astype(np.float64), 6)
    keys = np.stack(
        [
            model_codes.indices.to_numpy(),
            city_codes.indices.to_numpy(),
            np.unique(thetas, return_inverse=True)[1].reshape(-1),
        ],
        axis=1,
    )
    uniq, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(len(uniq)))
    m_sum = np.add.reduceat(m[order], starts, axis=0)
    n_sum = np.add.reduceat(n[order], starts, axis=0)
    images = np.bincount(group, minlength=len(uniq))
    models = model_codes.dictionary.to_pylist()
    cities = city_codes.dictionary.to_pylist()
    theta_values = np.unique(thetas)
    sums = {
        (models[mi], cities[ci], float(theta_values[ti])): [m_sum[g], n_sum[g], int(images[g])]
        for g, (mi, ci, ti) in enumerate(uniq)
    }
    if resamples is not None:
        place = resamples.place_of(t["image_id"])
        ends = np.append(starts[1:], len(order))
        for g, key in enumerate(sums):
            rows = order[starts[g] : ends[g]]
            sums[key] += [
                resamples.weighted(place[rows], m[rows]),
                resamples.weighted(place[rows], n[rows]),
                resamples.weighted(place[rows], np.ones(len(rows))),
            ]
    inside = m.copy()
    inside[:, 0] = -1  # 'other' is never an image's top object
    top = np.where(m[:, 1:].sum(1) > 0, inside.argmax(1), 0)
    tops = pa.table(
        {
            "image_id": t["image_id"],
            "model": t["model"],
            "theta": t["theta"],
            "top_class": pa.array(top, pa.int32()),
        },
        schema=TOPS,
    )
    return sums, tops
