"""Manifest files: entries confined to the city's source root (local and S3)."""

from __future__ import annotations

import pytest

from citylens.data.listing import confine, list_city, read_entries

REGEX = r"^(?P<place>.+)_\d+$"


@pytest.mark.parametrize(
    "entry,root,want",
    [
        ("a/b.jpg", "/data/city", "/data/city/a/b.jpg"),
        ("./a//b.jpg", "/data/city", "/data/city/a/b.jpg"),
        ("/data/city/a.jpg", "/data/city", "/data/city/a.jpg"),
        ("file:///data/city/a.jpg", "/data/city/", "/data/city/a.jpg"),
        ("a.jpg", "s3://bucket/city", "s3://bucket/city/a.jpg"),
        ("s3://bucket/city/x/a.jpg", "s3://bucket/city", "s3://bucket/city/x/a.jpg"),
    ],
)
def test_entries_under_the_root_resolve_to_full_uris(entry, root, want):
    assert confine(entry, root) == want


@pytest.mark.parametrize(
    "entry,root,why",
    [
        ("../secret.jpg", "/data/city", "'..' segment"),
        ("a/../../secret.jpg", "/data/city", "'..' segment"),
        ("a\\..\\..\\secret.jpg", "/data/city", "'..' segment"),
        ("/etc/passwd", "/data/city", "outside the source"),
        ("/data/city-evil/a.jpg", "/data/city", "outside the source"),  # a sibling prefix
        ("file:///etc/passwd", "s3://bucket/city", "file:// entry in a s3:// source"),
        ("/etc/passwd", "s3://bucket/city", "file:// entry in a s3:// source"),
        ("s3://other/city/a.jpg", "s3://bucket/city", "outside the source"),
        ("s3://bucket/city2/a.jpg", "s3://bucket/city", "outside the source"),
        ("http://example.com/a.jpg", "s3://bucket/city", "http:// entry"),
        ("s3://bucket/city/a.jpg", "/data/city", "s3:// entry in a file:// source"),
        ("  ", "/data/city", "empty"),
        ("a\0.jpg", "/data/city", "NUL"),
        (".", "/data/city", "names the source itself"),
    ],
)
def test_entries_that_leave_the_root_or_change_scheme_are_refused(entry, root, why):
    with pytest.raises(ValueError, match=why.replace("(", r"\(")):
        confine(entry, root)


def _city(tmp_path):
    root = tmp_path / "city"
    for name in ("p1_0.jpg", "p1_1.jpg", "p2_0.jpg", "sub/p3_0.jpg", "unlisted_0.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"do not read")
    return root


def test_a_local_manifest_lists_only_its_entries_and_records_the_refused(tmp_path):
    root = _city(tmp_path)
    manifest = tmp_path / "list.txt"
    manifest.write_text(
        "# a curated list\n"
        "p1_0.jpg\n"
        f"{root}/p1_1.jpg\n"
        "sub/p3_0.jpg\n"
        "\n"
        "../secret.jpg\n"
        "/etc/passwd\n"
        "s3://bucket/x.jpg\n"
        "gone_0.jpg\n"
        "p1_0.jpg\n"  # listed twice: one image, and the second entry recorded
    )
    images, refused = list_city("c", str(root), str(manifest), REGEX)
    assert [i.uri for i in images] == [
        f"{root}/p1_0.jpg",
        f"{root}/p1_1.jpg",
        f"{root}/sub/p3_0.jpg",
    ]
    assert [i.place for i in images] == ["p1", "p1", "p3"]
    assert all(i.size == 1 and i.version for i in images)
    kinds = {r["uri"]: r["kind"] for r in refused}
    assert kinds == {
        "../secret.jpg": "outside_source",
        "/etc/passwd": "outside_source",
        "s3://bucket/x.jpg": "outside_source",
        "gone_0.jpg": "missing",
        "p1_0.jpg": "duplicate",
    }
    assert all(r["stage"] == "ingest" and str(manifest) in r["message"] for r in refused)
    dup = next(r for r in refused if r["kind"] == "duplicate")
    assert "(line 10)" in dup["message"] and "first entry (line 2)" in dup["message"]


def test_a_csv_manifest_gives_places(tmp_path):
    root = _city(tmp_path)
    manifest = tmp_path / "list.csv"
    manifest.write_text("image,place\np1_0.jpg,corner-a\np2_0.jpg,corner-a\nsub/p3_0.jpg,\n")
    images, refused = list_city("c", str(root), str(manifest), REGEX)
    assert [i.place for i in images] == ["corner-a", "corner-a", "p3"] and not refused
    bad = tmp_path / "bad.csv"
    bad.write_text("file,place\np1_0.jpg,a\n")
    with pytest.raises(ValueError, match=r"bad.csv: a CSV manifest needs an 'image' column"):
        read_entries(str(bad))


def test_a_manifest_with_nothing_valid_is_an_error_naming_it(tmp_path):
    root = _city(tmp_path)
    manifest = tmp_path / "list.txt"
    manifest.write_text("../secret.jpg\n")
    with pytest.raises(FileNotFoundError, match="list.txt lists no image"):
        list_city("c", str(root), str(manifest))


def test_an_s3_manifest_refuses_local_files_and_other_buckets(s3_server, tmp_path):
    root = _city(tmp_path)
    bucket = s3_server.bucket("listing-city")
    other = s3_server.bucket("listing-other")
    s3_server.upload(root, f"{bucket}/city")
    s3_server.fs().pipe_file(f"{other.removeprefix('s3://')}/p9_0.jpg", b"x")
    manifest = f"{bucket}/lists/city.txt"
    s3_server.fs().pipe_file(
        manifest.removeprefix("s3://"),
        (
            f"p1_0.jpg\n{bucket}/city/sub/p3_0.jpg\nfile://{tmp_path}/secret.jpg\n"
            f"{tmp_path}/secret.jpg\n{other}/p9_0.jpg\n../../listing-other/p9_0.jpg\n"
        ).encode(),
    )
    images, refused = list_city(
        "c", f"{bucket}/city", manifest, REGEX, storage_options=s3_server.options
    )
    assert [i.uri for i in images] == [f"{bucket}/city/p1_0.jpg", f"{bucket}/city/sub/p3_0.jpg"]
    assert len(refused) == 4 and {r["kind"] for r in refused} == {"outside_source"}


def test_a_manifest_entry_that_links_outside_the_source_is_refused(tmp_path):
    root = _city(tmp_path)
    (root / "link_0.jpg").symlink_to(tmp_path / "secret.jpg")
    manifest = tmp_path / "list.txt"
    manifest.write_text("p1_0.jpg\nlink_0.jpg\n")
    images, refused = list_city("c", str(root), str(manifest), REGEX)
    assert [i.uri.rsplit("/", 1)[1] for i in images] == ["p1_0.jpg"]
    assert [(r["uri"], r["kind"]) for r in refused] == [("link_0.jpg", "outside_source")]
    assert "symbolic link" in refused[0]["message"]
    images, refused = list_city("c", str(root), str(manifest), REGEX, follow_links=True)
    assert len(images) == 2 and not refused
