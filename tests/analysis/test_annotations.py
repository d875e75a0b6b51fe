"""Annotation CSVs read, resolved and matched to the explanations they label."""

from __future__ import annotations

import pyarrow as pa
import pytest

from citylens.analysis.annotations import (
    match_annotations,
    parse_annotations,
    resolve_annotations,
)
from citylens.tables import ANNOTATED
from citylens.vocabulary import ade20k

PAGE_CSV = (
    "image,label1,label2,model,theta,annotator,seconds_spent\n"
    "a.jpg,building,Sky,vgg11-s0,0.6,ann,3.5\n"
    "b.jpg,NONE,,vgg11-s0,0.6,ann,1.0\n"
    "c.jpg,edifice,,simple-s1,0.5,,\n"
)


def test_the_pages_columns_are_read():
    rows = parse_annotations(PAGE_CSV, ade20k(), "folder/kim.csv")
    assert [r.labels for r in rows] == [(2, 3), (), (2,)]  # edifice is building's synonym
    assert [r.model for r in rows] == ["vgg11-s0", "vgg11-s0", "simple-s1"]
    assert [r.theta for r in rows] == [0.6, 0.6, 0.5]
    # an empty annotator cell falls back to the file's name
    assert [r.annotator for r in rows] == ["ann", "ann", "kim"]
    assert [r.seconds for r in rows] == [3.5, 1.0, None]
    assert rows[1].where == "folder/kim.csv, line 3"


def test_a_plain_csv_labels_every_model_and_theta():
    (row,) = parse_annotations("image,label1\na.jpg,44\n", ade20k(), "x.csv")
    assert row.labels == (44,) and row.model is None and row.theta is None
    assert row.annotator == "x"


@pytest.mark.parametrize(
    "text,match",
    [
        ("image,label1\na.jpg,castle\n", "line 2, label1: 'castle'"),
        ("image,label1\na.jpg,151\n", "line 2, label1: '151'"),
        ("image,label1\na.jpg,other\n", "line 2, label1: 'other'"),
        ("img,label\na.jpg,sky\n", "needs columns image, label1"),
        ("image,label1\n,sky\n", "line 2: needs an image"),
        ("image,label1\na.jpg,\n", "line 2: needs an image and label1"),
        ("image,label1,label2\na.jpg,none,sky\n", "line 2, label2: must be empty"),
        ("image,label1,label2\na.jpg,sky,sky\n", "line 2: label2 repeats label1"),
        ("image,label1,theta\na.jpg,sky,high\n", "line 2, theta: 'high' is not a number"),
        ("image,label1,seconds_spent\na.jpg,sky,-3\n", "seconds_spent: '-3' must be"),
        ("image,label1\n", "no annotation rows"),
        ("image,label1\na.jpg,screen\n", "'screen' names classes 59, 131 .* write the class index"),
    ],
)
def test_bad_entries_are_named(text, match):
    with pytest.raises(ValueError, match=match):
        parse_annotations(text, ade20k(), "ann.csv")


MANIFEST = pa.table(
    {
        "image_id": ["id-a", "id-b", "id-c"],
        "uri": ["/d/tokyo/a.jpg", "/d/tokyo/b.jpg", "/d/pitt/a.jpg"],
        "city": ["tokyo", "tokyo", "pitt"],
    }
)


def test_images_resolve_by_id_uri_city_and_name_and_ambiguity_is_unmatched():
    text = "image,label1\nid-a,sky\n/d/tokyo/b.jpg,sky\npitt/a.jpg,sky\nb.jpg,sky\na.jpg,sky\n"
    rows = parse_annotations(text, ade20k(), "one.csv")
    found, unmatched = resolve_annotations(rows[:3], MANIFEST)
    assert [a.image for a in found] == ["id-a", "id-b", "id-c"] and not unmatched
    found, unmatched = resolve_annotations(rows[3:], MANIFEST)
    assert [a.image for a in found] == ["id-b"]  # a.jpg is in both cities
    assert [a.image for a in unmatched] == ["a.jpg"]


def test_one_person_answering_one_explanation_twice_is_refused():
    text = "image,label1,model,theta\nid-a,sky,m,0.6\nid-a,road,m,0.6\nid-a,road,m,0.5\n"
    rows = parse_annotations(text, ade20k(), "twice.csv")
    with pytest.raises(ValueError, match="twice.csv, line 3: 'twice' already answered .* line 2"):
        resolve_annotations(rows, MANIFEST)
    found, _ = resolve_annotations([rows[0], rows[2]], MANIFEST)  # another θ is another one
    assert len(found) == 2


def _overlaps():
    # pixels inside each explanation of classes 0 (other), 1 (wall), 2 (building), 3 (sky)
    return pa.table(
        {
            "image_id": ["id-a", "id-a", "id-a", "id-b"],
            "city": ["tokyo"] * 4,
            "model": ["m1", "m1", "m2", "m1"],
            "theta": pa.array([0.5, 0.6, 0.6, 0.6], pa.float32()),
            "class_pixels_in_mask": [[0, 6, 3, 1], [9, 1, 4, 2], [0, 0, 0, 0], [1, 2, 2, 0]],
        }
    )


def test_matching_uses_model_and_theta_when_given():
    text = (
        "image,label1,label2,model,theta\nid-a,sky,road,m1,0.6\nid-b,none,,m1,0.6\n"
        "id-b,sky,,m2,0.6\nid-a,sky,,m1,0.55\n"  # no such explanations
    )
    rows, _ = resolve_annotations(parse_annotations(text, ade20k(), "p.csv"), MANIFEST)
    got, unexplained = match_annotations(rows, _overlaps())
    assert [a.where for a in unexplained] == ["p.csv, line 4", "p.csv, line 5"]
    assert got.schema == ANNOTATED
    d = got.to_pylist()
    assert [(r["image_id"], r["model"]) for r in d] == [("id-a", "m1"), ("id-b", "m1")]
    assert d[0]["theta"] == pytest.approx(0.6)
    assert (d[0]["label1"], d[0]["label2"]) == (3, ade20k().index("road"))
    assert (d[1]["label1"], d[1]["label2"]) == (-1, -1)
    # id-a at m1, θ 0.6: building 4, sky 2, wall 1, other ignored: (4 + 2) / 7
    assert (d[0]["top1"], d[0]["top2"]) == (2, 3) and d[0]["ratio"] == pytest.approx(6 / 7)
    # id-b: wall 2, building 2 (a tie: the lower index first), sky 0: (2 + 2) / 4
    assert (d[1]["top1"], d[1]["top2"]) == (1, 2) and d[1]["ratio"] == pytest.approx(1.0)


def test_a_plain_annotation_matches_every_explanation_of_its_image():
    rows, _ = resolve_annotations(
        parse_annotations("image,label1\nid-a,sky\n", ade20k(), "p.csv"), MANIFEST
    )
    got = match_annotations(rows, _overlaps())[0].to_pandas()
    assert sorted(zip(got.model, (round(float(t), 2) for t in got.theta))) == [
        ("m1", 0.5),
        ("m1", 0.6),
        ("m2", 0.6),
    ]
    empty = got[got.model == "m2"].iloc[0]
    assert empty.top1 == -1 and empty.top2 == -1  # the segmenter labelled nothing in it


def test_every_token_reads_back_as_its_class():
    from citylens.analysis.annotations import class_lookup, label_tokens

    voc = ade20k()
    tokens = label_tokens(voc)
    text = "image,label1\n" + "".join(f"i{k},{t}\n" for k, t in enumerate(tokens) if k)
    assert [a.labels for a in parse_annotations(text, voc)] == [(k,) for k in range(1, 151)]
    lookup = class_lookup(voc)
    assert lookup["screen"] == (59, 131) and lookup["door"] == 15  # a name beats a synonym
    assert lookup["edifice"] == 2 and "other" not in lookup
