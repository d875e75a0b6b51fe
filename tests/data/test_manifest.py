import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from citylens.data.manifest import (
    TOKYO247_PLACE_REGEX,
    assign_splits,
    image_id,
    make_manifest,
    place_of,
    probe,
    scan_city,
)
from citylens.data.synth import PLACE_REGEX
from citylens.tables import MANIFEST


def _manifest(cities, regex=None, labels=None, seed=0):
    rows = []
    for city, source in cities.items():
        for s in scan_city(city, str(source), regex, labels and labels.get(city))[0]:
            data = Path(s.uri).read_bytes()
            w, h = probe(data)
            rows.append(
                dict(
                    image_id=image_id(data),
                    uri=s.uri,
                    city=city,
                    place=s.place,
                    width=w,
                    height=h,
                    label_uri=s.label_uri,
                )
            )
    return make_manifest(rows, seed=seed)


def _no_place_straddles(manifest):
    df = manifest.to_pandas()
    per_place = df.groupby(["city", "place"])["split"].nunique()
    return (per_place == 1).all()


def test_tokyo247_names_give_real_places(shared_data):
    src = shared_data / "tokyo247_samples"
    manifest, errors = _manifest({"tokyo": src}, TOKYO247_PLACE_REGEX)
    assert manifest.schema == MANIFEST
    df = manifest.to_pandas()
    assert len(df) == 32 and errors.num_rows == 0
    assert df.place.nunique() == 6
    assert "CgrlaJfo85Bw6QF1WhMs_A" in set(df.place)  # underscores inside the pano id
    assert _no_place_straddles(manifest)
    assert set(df.split) == {"train", "val", "test"}
    assert (df.width == 640).all() and (df.height == 480).all()
    first = df.iloc[0]
    assert first.image_id == image_id(Path(first.uri).read_bytes())


def test_default_is_one_place_per_file(shared_data):
    manifest, _ = _manifest({"tokyo": shared_data / "tokyo247_samples"})
    df = manifest.to_pandas()
    assert df.place.nunique() == 32


def test_synthetic_split_is_grouped_balanced_and_labelled(small_corpus):
    cities = {c: small_corpus / c for c in ("towerville", "signburg")}
    labels = {c: str(small_corpus / "labels" / c) for c in cities}
    manifest, _ = _manifest(cities, PLACE_REGEX, labels)
    df = manifest.to_pandas()
    assert _no_place_straddles(manifest)
    assert df.groupby("city").place.nunique().tolist() == [12, 12]
    for _, d in df.groupby("city"):
        frac = d.split.value_counts(normalize=True)
        assert frac["train"] == pytest.approx(0.6, abs=0.1)
        assert frac["val"] == pytest.approx(0.2, abs=0.1)
    assert df.label_uri.notna().all()
    assert all(
        lu.endswith(u.rsplit("/", 1)[1].replace(".jpg", ".png"))
        for u, lu in zip(df.uri, df.label_uri)
    )


def test_split_is_stable_when_another_city_is_added():
    cities = ["a"] * 20 + ["b"] * 20
    places = [f"p{i // 2}" for i in range(20)] * 2
    two = assign_splits(cities, places, seed=1)
    three = assign_splits(cities + ["c"] * 6, places + ["x", "x", "y", "y", "z", "z"], seed=1)
    assert (three[:40] == two).all()
    assert not (assign_splits(cities, places, seed=2) == two).all()


def test_too_few_places_names_the_city():
    with pytest.raises(ValueError, match="city 'b' has 2 place"):
        assign_splits(["a"] * 3 + ["b"] * 2, ["1", "2", "3", "1", "2"])


def test_duplicates_go_to_the_errors_table(tmp_path, small_corpus):
    city = tmp_path / "dup"
    shutil.copytree(small_corpus / "signburg", city)
    shutil.copy(city / "p00000_00.jpg", city / "zz_copy_99.jpg")
    manifest, errors = _manifest({"dup": city}, PLACE_REGEX)
    assert manifest.num_rows == 36
    err = errors.to_pylist()
    assert len(err) == 1 and err[0]["kind"] == "duplicate" and err[0]["stage"] == "ingest"
    assert err[0]["uri"].endswith("zz_copy_99.jpg") and "p00000_00.jpg" in err[0]["message"]


def test_missing_or_empty_source_names_the_city(tmp_path):
    with pytest.raises(FileNotFoundError, match="city 'x'.*does not exist"):
        scan_city("x", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="city 'y': no images"):
        scan_city("y", str(tmp_path / "empty"))


def test_place_regex_fallback(tmp_path, small_corpus):
    assert place_of("abc_012_330", re.compile(TOKYO247_PLACE_REGEX)) == "abc"
    assert place_of("p00001_03", re.compile(r"^(p\d+)_")) == "p00001"
    assert place_of("odd", re.compile(TOKYO247_PLACE_REGEX)) is None
    with pytest.warns(UserWarning, match="do not match place_regex"):
        got, _ = scan_city("s", str(small_corpus / "signburg"), TOKYO247_PLACE_REGEX)
    assert got[0].place == "p00000_00"


def test_split_assignment_is_deterministic():
    rng = np.random.default_rng(0)
    places = [f"p{i}" for i in rng.integers(0, 30, 200)]
    a = assign_splits(["c"] * 200, places, seed=4)
    assert (a == assign_splits(["c"] * 200, places, seed=4)).all()


def _row(uri, city, iid, label=None, place_found=True):
    return dict(
        image_id=iid,
        uri=uri,
        city=city,
        place=uri.rsplit("/", 1)[1].split("_")[0],
        width=64,
        height=64,
        label_uri=label,
        place_found=place_found,
    )


def test_the_same_bytes_in_two_cities_are_left_out_of_both():
    from citylens.data.manifest import dedupe

    rows = [_row(f"/a/p{i}_0.jpg", "a", f"a{i}") for i in range(3)]
    rows += [_row(f"/b/p{i}_0.jpg", "b", f"b{i}") for i in range(3)]
    rows += [
        _row("/a/shared_0.jpg", "a", "same"),
        _row("/b/shared_0.jpg", "b", "same"),
        _row("/b/shared_1.jpg", "b", "same"),
    ]
    keep, errors = dedupe(rows)
    assert "same" not in {r["image_id"] for r in keep} and len(keep) == 6
    assert sorted((e["uri"], e["kind"]) for e in errors) == [
        ("/a/shared_0.jpg", "duplicate_across_cities"),
        ("/b/shared_0.jpg", "duplicate_across_cities"),
        ("/b/shared_1.jpg", "duplicate_across_cities"),
    ]
    message = next(e["message"] for e in errors if e["uri"] == "/a/shared_0.jpg")
    assert "/b/shared_0.jpg" in message and "(b)" in message


def test_a_duplicate_keeps_the_copy_with_labels_and_a_place_whatever_the_order():
    from citylens.data.manifest import dedupe

    original = _row("/c/orig_0.jpg", "c", "x", label="/l/orig_0.png")
    copy = _row("/c/dup copy.jpg", "c", "x", place_found=False)  # first by path
    no_place = _row("/c/a-no-place.jpg", "c", "y", label="/l/a.png", place_found=False)
    placed = _row("/c/b_0.jpg", "c", "y", label="/l/b.png")
    for order in ([copy, original, no_place, placed], [placed, no_place, original, copy]):
        keep, errors = dedupe(order)
        assert [r["uri"] for r in keep] == ["/c/b_0.jpg", "/c/orig_0.jpg"]
        assert {e["uri"]: e["kind"] for e in errors} == {
            "/c/dup copy.jpg": "duplicate",
            "/c/a-no-place.jpg": "duplicate",
        }
    plain = [_row("/c/b.jpg", "c", "z"), _row("/c/a.jpg", "c", "z")]  # a tie: first by path
    assert [r["uri"] for r in dedupe(plain)[0]] == ["/c/a.jpg"]


def test_a_scan_refuses_links_that_lead_outside_the_source(tmp_path):
    src, out = tmp_path / "city", tmp_path / "elsewhere"
    (src / "sub").mkdir(parents=True)
    out.mkdir()
    for name in ("p1_0.jpg", "p2_0.jpg", "sub/p3_0.jpg"):
        (src / name).write_bytes(b"x")
    (out / "secret.jpg").write_bytes(b"do not read")
    (out / "d").mkdir()
    (out / "d" / "p9_0.jpg").write_bytes(b"y")
    (src / "leak_0.jpg").symlink_to(out / "secret.jpg")
    (src / "inside_0.jpg").symlink_to(src / "p1_0.jpg")  # a link within the source is fine
    (src / "dir").symlink_to(out / "d", target_is_directory=True)
    images, refused = scan_city("c", str(src), r"^(?P<place>.+)_\d+$")
    names = sorted(Path(i.uri).name for i in images)
    assert names == ["inside_0.jpg", "p1_0.jpg", "p2_0.jpg", "p3_0.jpg"]
    assert [(Path(r["uri"]).name, r["kind"]) for r in refused] == [("leak_0.jpg", "outside_source")]
    assert str(out / "secret.jpg") in refused[0]["message"]
    images, refused = scan_city("c", str(src), r"^(?P<place>.+)_\d+$", follow_links=True)
    assert "leak_0.jpg" in {Path(i.uri).name for i in images} and not refused
