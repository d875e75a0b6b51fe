"""The shard reducers (vectorised over Arrow) against hand-computed cases and row-by-row
Python references."""

import itertools

import numpy as np
import pyarrow as pa
import pytest

from citylens.analysis.bootstrap import Resamples, place_index
from citylens.analysis.reduce import (
    accuracy_sums,
    add_sums,
    ar_of_table,
    list_matrix,
    sums_of_table,
)
from citylens.tables import AR_IMAGES, TOPS


def _explanations(rows):
    return pa.table(
        {
            "image_id": [r[0] for r in rows],
            "city": [r[1] for r in rows],
            "model": [r[2] for r in rows],
            "cam_h": pa.array([r[3].shape[0] for r in rows], pa.int16()),
            "cam_w": pa.array([r[3].shape[1] for r in rows], pa.int16()),
            "mask": pa.array([r[3].reshape(-1).tolist() for r in rows], pa.list_(pa.float32())),
        }
    )


def test_ar_by_hand():
    # image x: a = [[1, 0], [0, 0]], b = [[0, 0], [0, 1]] on their own 2x2 grid: AR = 2/4
    # image y: identical masks: AR = 0; image z: only model a explained it (not compared)
    a_x = np.array([[1, 0], [0, 0]], np.float32)
    b_x = np.array([[0, 0], [0, 1]], np.float32)
    same = np.array([[0, 1], [1, 0.5]], np.float32)
    t = _explanations(
        [
            ("y", "c2", "b", same),
            ("x", "c1", "a", a_x),
            ("z", "c1", "a", same),
            ("x", "c1", "b", b_x),
            ("y", "c2", "a", same),
        ]
    )
    rows, sums = ar_of_table(t, 2)
    assert rows.schema == AR_IMAGES
    assert rows.to_pylist() == [
        {"image_id": "x", "city": "c1", "model_a": "a", "model_b": "b", "ar": 0.5},
        {"image_id": "y", "city": "c2", "model_a": "a", "model_b": "b", "ar": 0.0},
    ]
    assert sums == {("a", "b"): [0.5, 0.25, 2]}


def test_ar_matches_a_row_by_row_reference():
    """Three models, different mask sizes, a shuffled shard with gaps."""
    from citylens.analysis.ar import average_residual

    rng = np.random.default_rng(0)
    sides = {"m1": 3, "m2": 5, "m3": 3}
    rows = []
    for i in range(40):
        for m, side in sides.items():
            if rng.random() < 0.85:
                rows.append((f"img{i:02d}", f"c{i % 3}", m, rng.random((side, side), np.float32)))
    order = rng.permutation(len(rows))
    t = _explanations([rows[i] for i in order])
    got, sums = ar_of_table(t, 8)
    by = {(r[2], r[0]): r for r in rows}
    expect = []
    for a, b in itertools.combinations(sorted(sides), 2):
        for iid in sorted({r[0] for r in rows}):
            if (a, iid) in by and (b, iid) in by:
                ar = average_residual(by[(a, iid)][3][None], by[(b, iid)][3][None], (8, 8))[0]
                expect.append((iid, by[(a, iid)][1], a, b, ar))
    assert [(r["image_id"], r["city"], r["model_a"], r["model_b"]) for r in got.to_pylist()] == [
        e[:4] for e in expect
    ]
    np.testing.assert_allclose(got["ar"].to_numpy(), [e[4] for e in expect], rtol=1e-6)
    for (a, b), (s, s2, n) in sums.items():
        ars = [e[4] for e in expect if e[2:4] == (a, b)]
        assert n == len(ars)
        assert s == pytest.approx(sum(ars)) and s2 == pytest.approx(sum(x * x for x in ars))


def test_ar_of_a_single_model_shard_is_empty():
    t = _explanations([("x", "c", "a", np.ones((2, 2), np.float32))])
    rows, sums = ar_of_table(t, 4)
    assert rows.num_rows == 0 and rows.schema == AR_IMAGES and sums == {}


def _overlaps(rows):
    return pa.table(
        {
            "image_id": [r[0] for r in rows],
            "city": [r[1] for r in rows],
            "model": [r[2] for r in rows],
            "theta": pa.array([r[3] for r in rows], pa.float32()),
            "class_pixels_in_mask": pa.array([r[4] for r in rows], pa.list_(pa.int64())),
            "class_pixels": pa.array([r[5] for r in rows], pa.list_(pa.int64())),
        }
    )


def test_pixel_sums_by_hand():
    t = _overlaps(
        [
            ("x", "c1", "a", 0.6, [5, 3, 0], [10, 4, 1]),
            ("y", "c1", "a", 0.6, [1, 0, 2], [2, 1, 2]),
            ("x", "c1", "a", 0.8, [5, 0, 0], [10, 4, 1]),
            ("z", "c2", "a", 0.6, [9, 0, 0], [9, 0, 0]),
        ]
    )
    sums, tops = sums_of_table(t)
    assert sorted(sums) == [("a", "c1", 0.6), ("a", "c1", 0.8), ("a", "c2", 0.6)]
    m, n, images = sums[("a", "c1", 0.6)]
    assert m.tolist() == [6, 3, 2] and n.tolist() == [12, 5, 3] and images == 2
    assert [x.tolist() if hasattr(x, "tolist") else x for x in sums[("a", "c2", 0.6)]] == [
        [9, 0, 0],
        [9, 0, 0],
        1,
    ]
    assert tops.schema == TOPS
    # x: class 1 (other excluded); y: class 2; x at 0.8: nothing but 'other' -> 0; z -> 0
    assert tops["top_class"].to_pylist() == [1, 2, 0, 0]


def test_pixel_sums_match_a_row_by_row_reference():
    rng = np.random.default_rng(1)
    rows = []
    for i in range(200):
        n = rng.integers(0, 50, 6)
        m = (n * rng.random(6)).astype(int)
        rows.append(
            (
                f"i{i}",
                f"c{i % 3}",
                f"m{i % 2}",
                [0.6, 0.8][i % 5 == 0],
                m.tolist(),
                n.tolist(),
            )
        )
    sums, tops = sums_of_table(_overlaps(rows))
    for key in {(r[2], r[1], round(float(np.float32(r[3])), 6)) for r in rows}:
        sel = [r for r in rows if (r[2], r[1], round(float(np.float32(r[3])), 6)) == key]
        m, n, count = sums[key]
        assert m.tolist() == np.sum([r[4] for r in sel], axis=0).tolist()
        assert n.tolist() == np.sum([r[5] for r in sel], axis=0).tolist()
        assert count == len(sel)
    assert sum(v[2] for v in sums.values()) == len(rows)
    for r, top in zip(rows, tops["top_class"].to_pylist()):
        objects = r[4][1:]
        assert top == (0 if sum(objects) == 0 else 1 + int(np.argmax(objects)))


def test_list_matrix_reads_sliced_chunked_columns_and_refuses_ragged_rows():
    col = pa.chunked_array([pa.array([[1, 2], [3, 4]]), pa.array([[5, 6], [7, 8]])])
    assert list_matrix(col).tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert list_matrix(col.slice(1, 2), np.float32).tolist() == [[3, 4], [5, 6]]
    with pytest.raises(ValueError, match="differ in length"):
        list_matrix(pa.array([[1, 2], [3]]))


def _resamples(rows, n_boot=40, seed=3):
    """The test images' places: image ``iK`` of city ``c`` is at place ``K // 2`` (two views)."""
    ids = sorted({(r[0], r[1]) for r in rows})
    index = place_index([c for _, c in ids], [int(i[1:]) // 2 for i, _ in ids])
    return Resamples(index, [i for i, _ in ids], n_boot, seed), dict(ids)


def _place_loop(res, image_ids, values):
    """Σ_w values by a plain loop: for each resample, each image weighs its place's draw."""
    pos = {i: k for k, i in enumerate(res.image_ids.to_pylist())}
    out = np.zeros((res.n_boot, *np.shape(values)[1:]))
    for b in range(res.n_boot):
        for i, v in zip(image_ids, values):
            out[b] += res.weights[b, res.place_of_image[pos[i]]] * np.asarray(v, float)
    return out


def test_resampled_pixel_sums_equal_a_loop_over_places():
    rng = np.random.default_rng(4)
    rows = []
    for i in range(60):
        n = rng.integers(0, 30, 5)
        rows.append((f"i{i}", f"c{i % 2}", f"m{i % 3 % 2}", 0.6, (n // 2).tolist(), n.tolist()))
    res, _ = _resamples(rows)
    sums, _ = sums_of_table(_overlaps(rows), res)
    for key, (_, _, _, m_b, n_b, count_b) in sums.items():
        sel = [r for r in rows if (r[2], r[1]) == key[:2]]
        ids = [r[0] for r in sel]
        np.testing.assert_allclose(m_b, _place_loop(res, ids, [r[4] for r in sel]))
        np.testing.assert_allclose(n_b, _place_loop(res, ids, [r[5] for r in sel]))
        np.testing.assert_allclose(count_b, _place_loop(res, ids, np.ones(len(sel))))
    # without resamples: the same point sums, three entries
    plain, _ = sums_of_table(_overlaps(rows))
    for key, values in plain.items():
        assert len(values) == 3 and values[0].tolist() == sums[key][0].tolist()
    # a shard's partial sums add up to the whole table's
    total: dict = {}
    for part in (rows[:25], rows[25:]):
        add_sums(total, sums_of_table(_overlaps(part), res)[0])
    for key, values in sums.items():
        for got, want in zip(total[key], values):
            np.testing.assert_allclose(got, want)


def test_resampled_ar_and_accuracy_sums_equal_a_loop_over_places():
    rng = np.random.default_rng(5)
    rows = []
    for i in range(16):
        for model in ("a", "b"):
            rows.append((f"i{i}", f"c{i % 2}", model, rng.random((3, 3)).astype(np.float32)))
    t = _explanations(rows)
    res, city_of = _resamples(rows, n_boot=30)
    table, sums = ar_of_table(t, 6, res)
    s, s2, n, ar_b, n_b = sums[("a", "b")]
    ids = table["image_id"].to_pylist()
    np.testing.assert_allclose(ar_b, _place_loop(res, ids, table["ar"].to_numpy()))
    np.testing.assert_allclose(n_b, _place_loop(res, ids, np.ones(len(ids))))
    preds = [int(rng.integers(0, 2)) for _ in rows]
    t = t.append_column("pred", pa.array(preds, pa.int16()))
    hits = accuracy_sums(t, ["c0", "c1"], res)
    for model in ("a", "b"):
        sel = [(r[0], p) for r, p in zip(rows, preds) if r[2] == model]
        correct = [float(p == int(city_of[i][1])) for i, p in sel]
        assert hits[model][:2] == [int(sum(correct)), len(sel)]
        np.testing.assert_allclose(hits[model][2], _place_loop(res, [i for i, _ in sel], correct))
    with pytest.raises(ValueError, match="not in the resampled test split"):
        res.rows(["nowhere"])
