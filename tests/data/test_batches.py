"""Seeded batches over blocks, and a split's blocks on a node's disk."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from citylens.data.batches import ShuffledBlocks
from citylens.data.block_cache import BlockCache, build_block_cache, open_or_build, prune


def _blocks(n_rows=150, per=16, size=4, bad=(3, 40, 77)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_rows, 3, size, size), dtype=np.uint8)
    labels = rng.integers(0, 3, n_rows)
    out = []
    for a in range(0, n_rows, per):
        b = min(a + per, n_rows)
        ok = np.asarray([i not in bad for i in range(a, b)])
        out.append(
            {
                "image": images[a:b],
                "label": labels[a:b],
                "ok": ok,
                "image_id": np.asarray([f"id{i}" for i in range(a, b)], object),
                "uri": np.asarray([f"/c/{i}.jpg" for i in range(a, b)], object),
                "error_kind": np.asarray([None if k else "unreadable" for k in ok], object),
                "error_message": np.asarray([None if k else "bad" for k in ok], object),
            }
        )
    return out, images, labels


def _plain_epoch(blocks, batch_size, seed, e, window):
    """The order by hand: blocks permuted, then images within windows of blocks."""
    rng = np.random.default_rng([seed, e])
    order = rng.permutation(len(blocks))
    out = []
    for i in range(0, len(order), window):
        chosen = [blocks[j] for j in order[i : i + window]]
        x = np.concatenate([b["image"][b["ok"]] for b in chosen])
        y = np.concatenate([b["label"][b["ok"]] for b in chosen])
        idx = rng.permutation(len(y))
        for k in range(0, len(idx), batch_size):
            out.append((x[idx[k : k + batch_size]], y[idx[k : k + batch_size]]))
    return out


def test_batches_follow_the_seeded_order_by_hand():
    blocks, _, _ = _blocks()
    sb = ShuffledBlocks(len(blocks), lambda js: [blocks[j] for j in js], 8, seed=3, window=3)
    got = list(sb.epoch(2))
    want = _plain_epoch(blocks, 8, 3, 2, 3)
    assert len(got) == len(want)
    for (x, y), (wx, wy) in zip(got, want):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        np.testing.assert_array_equal(x.numpy(), wx)
        np.testing.assert_array_equal(y.numpy(), wy)
    assert sum(len(y) for _, y in got) == 150 - 3  # bad rows left out
    # evaluation: stored order
    plain = torch.cat([y for _, y in sb.epoch()])
    np.testing.assert_array_equal(
        plain.numpy(), np.concatenate([b["label"][b["ok"]] for b in blocks])
    )
    assert [y.tolist() for _, y in sb.epoch(2)] != [y.tolist() for _, y in sb.epoch(3)]


def test_a_cache_gives_the_batches_the_blocks_give(tmp_path):
    blocks, _, _ = _blocks()
    cache = build_block_cache(tmp_path / "k", iter(blocks), 150, 4)
    assert cache.n_blocks == len(blocks)
    assert [e["image_id"] for e in cache.errors] == ["id3", "id40", "id77"]
    assert cache.errors[0]["error_kind"] == "unreadable"
    direct = ShuffledBlocks(len(blocks), lambda js: [blocks[j] for j in js], 8, seed=1)
    cached = ShuffledBlocks(cache.n_blocks, cache.read, 8, seed=1)
    for e in (1, 2, None):
        for (x, y), (cx, cy) in zip(direct.epoch(e), cached.epoch(e), strict=True):
            assert torch.equal(x, cx) and torch.equal(y, cy)
    again = BlockCache(tmp_path / "k")  # reopened from disk
    np.testing.assert_array_equal(again.read([4])[0]["image"], blocks[4]["image"])


def test_a_wrong_row_count_leaves_nothing_behind(tmp_path):
    blocks, _, _ = _blocks()
    with pytest.raises(ValueError, match="hold 150 rows, not the 151"):
        build_block_cache(tmp_path / "k", iter(blocks), 151, 4)
    assert list(tmp_path.iterdir()) == []


def test_trials_on_one_node_build_once(tmp_path):
    blocks, _, _ = _blocks()
    calls, results = [], []

    def make():
        calls.append(1)
        return iter(blocks)

    def trial():
        results.append(open_or_build(tmp_path, "key1", make, 150, 4))

    threads = [threading.Thread(target=trial) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(built for _, built in results) == [False, False, True]
    # an unused cache of another key goes; the one kept stays
    open_or_build(tmp_path, "old", lambda: iter(blocks), 150, 4)
    assert prune(tmp_path, keep={"key1"}, older_than_s=0) == ["old"]
    assert (tmp_path / "key1" / "meta.json").exists() and not (tmp_path / "old").exists()
    assert prune(tmp_path, keep=set(), older_than_s=3600) == []  # used just now


def test_a_disk_too_small_is_refused_before_anything_is_decoded(tmp_path):
    import errno

    def never():
        raise AssertionError("decoded although the disk cannot hold the cache")

    with pytest.raises(OSError, match="GiB free; the decoded split needs") as err:
        open_or_build(tmp_path, "huge", never, rows=10**9, size=224)
    assert err.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["huge.lock"]


def test_what_a_dead_build_or_a_cut_prune_left_is_cleared(tmp_path):
    blocks, _, _ = _blocks()
    (tmp_path / "k.tmp-123-456").mkdir()  # a build killed half way
    (tmp_path / "k.tmp-123-456" / "images.npy").write_bytes(b"x" * 100)
    (tmp_path / "k").mkdir()  # a prune cut after meta.json went
    (tmp_path / "k" / "images.npy").write_bytes(b"x")
    cache, built = open_or_build(tmp_path, "k", lambda: iter(blocks), 150, 4)
    assert built and cache.n_blocks == len(blocks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.lock"]
    # a leftover of another key goes whatever its age; a complete, recent cache stays
    (tmp_path / "j.tmp-9-9").mkdir()
    assert prune(tmp_path, keep=set(), older_than_s=3600) == ["j.tmp-9-9"]
    assert (tmp_path / "k" / "meta.json").exists()


def test_a_cache_that_may_not_be_reused_is_built_again(tmp_path):
    blocks, _, _ = _blocks()
    first, built = open_or_build(tmp_path, "k", lambda: iter(blocks), 150, 4, extra={"run": 1})
    assert built and first.meta["run"] == 1
    same, built = open_or_build(
        tmp_path, "k", lambda: iter(blocks), 150, 4, reusable=lambda m: m["run"] == 1
    )
    assert not built
    again, built = open_or_build(
        tmp_path,
        "k",
        lambda: iter(blocks),
        150,
        4,
        reusable=lambda m: m["run"] == 2,
        extra={"run": 2},
    )
    assert built and again.meta["run"] == 2


def test_a_file_that_could_not_be_read_for_a_moment_is_read_again(tmp_path, small_corpus):
    import shutil
    import threading

    import pyarrow as pa

    from citylens.pipeline.trainer import _decode_retrying

    src = sorted((small_corpus / "towerville").glob("*.jpg"))[0]
    late = tmp_path / "late.jpg"  # appears only after the first read failed
    rows = pa.table(
        {"image_id": ["a", "b"], "uri": [str(src), str(late)], "city": ["towerville"] * 2}
    )
    config = {"input_size": 32, "cities": ["towerville"], "storage_options": {}}
    timer = threading.Timer(0.3, lambda: shutil.copy(src, late))
    timer.start()
    block = _decode_retrying(rows, config, waits=(1.0,))
    timer.join()
    assert block["ok"].tolist() == [True, True]
    np.testing.assert_array_equal(block["image"][0], block["image"][1])
    gone = pa.table(
        {"image_id": ["c"], "uri": [str(tmp_path / "never.jpg")], "city": ["towerville"]}
    )
    block = _decode_retrying(gone, config, waits=(0.0, 0.0))
    assert block["ok"].tolist() == [False] and block["error_kind"][0] == "unreadable"
