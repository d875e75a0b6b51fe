import csv
import io

import numpy as np
import pytest

from citylens.vocabulary import Vocabulary, ade20k


def test_ade20k_names_and_palette_match_the_csail_files(shared_data):
    voc = ade20k()
    assert len(voc) == 151 and voc.names[0] == "other"
    for name, idx in {
        "wall": 1,
        "building": 2,
        "sky": 3,
        "signboard": 44,
        "skyscraper": 49,
        "streetlight": 88,
        "pole": 94,
        "flag": 150,
    }.items():
        assert voc.index(name) == idx
    text = (shared_data / "ade20k/objectInfo150.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["Name"].split(";")[0] for r in rows] == list(voc.names[1:])
    from scipy.io import loadmat

    colors = loadmat(shared_data / "ade20k/visualizationCode/color150.mat")["colors"]
    np.testing.assert_array_equal(voc.colors[1:], colors)


def test_objectinfo_format_and_roundtrip(shared_data):
    text = (shared_data / "ade20k/objectInfo150.csv").read_text()
    voc = Vocabulary.from_csv(text, "ade")
    assert voc.names == ade20k().names
    again = Vocabulary.from_csv(ade20k().to_csv(), "x")
    assert again.names == ade20k().names
    np.testing.assert_array_equal(again.colors, ade20k().colors)


def test_bad_class_files():
    with pytest.raises(ValueError, match="indices must run 1..K"):
        Vocabulary.from_csv("index,name\n1,a\n3,b\n", "f.csv")
    with pytest.raises(ValueError, match="needs columns"):
        Vocabulary.from_csv("id,label\n1,a\n", "f.csv")
    with pytest.raises(KeyError, match="'dragon'"):
        ade20k().index("dragon")


def test_synonyms_are_objectinfo150s_other_names(shared_data):
    text = (shared_data / "ade20k/objectInfo150.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    names = [[a.strip() for a in r["Name"].split(";")] for r in rows]
    # each other name once, never the class's own (ADE20K lists "door;double;door")
    want = [tuple(dict.fromkeys(a for a in n[1:] if a != n[0])) for n in names]
    assert list(ade20k().synonyms[1:]) == want
    assert list(Vocabulary.from_csv(text, "ade").synonyms[1:]) == want
    assert ade20k().synonyms[ade20k().index("building")] == ("edifice",)
    # a class file without other names has none
    assert Vocabulary.from_csv("index,name\n1,a\n2,b\n", "f.csv").synonyms == ()
