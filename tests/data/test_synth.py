import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from citylens.data.scenes import CLASS, STYLES, style_for
from citylens.data.synth import render_place, synthesize


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_description(small_corpus):
    meta = json.loads((small_corpus / "corpus.json").read_text())
    assert [c["name"] for c in meta["cities"]] == ["towerville", "signburg"]
    assert meta["images"] == 2 * 12 * 3
    for city in ("towerville", "signburg"):
        images = sorted((small_corpus / city).glob("*.jpg"))
        labels = sorted((small_corpus / "labels" / city).glob("*.png"))
        assert len(images) == 36 and [p.stem for p in images] == [p.stem for p in labels]
        assert images[0].name == "p00000_00.jpg"
        with Image.open(images[0]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
        with Image.open(labels[0]) as lab:
            assert lab.size == (64, 64) and lab.mode == "L"
    assert (small_corpus / "classes.csv").read_text().startswith("index,name")


def test_deterministic_for_a_seed(tmp_path, small_corpus):
    again = tmp_path / "again"
    synthesize(again, cities=2, places=12, views=3, size=64, seed=5, workers=2)
    assert _digest(again) == _digest(small_corpus)  # serial and parallel agree, too
    other = tmp_path / "other"
    synthesize(other, cities=2, places=12, views=3, size=64, seed=6, workers=1)
    assert _digest(other) != _digest(small_corpus)


def _classes(folder):
    seen = set()
    for p in folder.glob("*.png"):
        seen |= set(np.unique(np.asarray(Image.open(p))).tolist())
    return seen


def test_each_city_has_its_own_objects(small_corpus):
    tower = _classes(small_corpus / "labels" / "towerville")
    signs = _classes(small_corpus / "labels" / "signburg")
    shared = {CLASS[c] for c in ("building", "sky", "road")}
    assert shared <= tower and shared <= signs
    tower_only = {CLASS[c] for c in ("skyscraper", "earth", "streetlight")}
    signs_only = {CLASS[c] for c in ("signboard", "fence", "plant")}
    assert tower_only <= tower and not tower_only & signs
    assert signs_only <= signs and not signs_only & tower


def test_own_objects_never_take_the_place_of_a_shared_class(small_corpus):
    """Bare earth lies on the sidewalks, not instead of them: every view of every city
    has sidewalk, so no city can be told by a shared class's absence."""
    for city in ("towerville", "signburg"):
        for p in sorted((small_corpus / "labels" / city).glob("*.png")):
            lab = np.asarray(Image.open(p))
            assert (lab == CLASS["sidewalk"]).mean() > 0.03, (city, p.name)


def test_identity_is_not_a_colour_cast(tmp_path):
    """Shared classes look the same in both cities: same palette, lighting and noise."""
    # Enough places that sampling noise (4 facade colours) is below the tolerance, and
    # interior pixels only: JPEG bleeds colour across object edges.
    from scipy.ndimage import binary_erosion

    corpus = tmp_path / "many"
    synthesize(corpus, cities=2, places=200, views=1, size=64, seed=5)
    means = {}
    for city in ("towerville", "signburg"):
        acc = {c: [] for c in ("sky", "road", "building")}
        for img_path in (corpus / city).glob("*.jpg"):
            img = np.asarray(Image.open(img_path), np.float64)
            lab = np.asarray(Image.open(corpus / "labels" / city / f"{img_path.stem}.png"))
            for c in acc:
                sel = binary_erosion(lab == CLASS[c], iterations=2)
                if sel.sum() > 20:
                    acc[c].append(img[sel].mean(0))
        means[city] = {c: np.mean(v, 0) for c, v in acc.items()}
    for c in ("sky", "road", "building"):
        diff = np.abs(means["towerville"][c] - means["signburg"][c]).max()
        assert diff < 6, f"{c} differs by {diff:.1f} levels between cities"


def test_views_of_a_place_differ_but_show_the_same_scene():
    views = render_place(STYLES[1], place=3, views=4, size=64, seed=0, city_index=1)
    assert len(views) == 4
    imgs = [v[0] for v in views]
    assert any(not np.array_equal(imgs[0], im) for im in imgs[1:])
    hist = [np.bincount(v[1].ravel(), minlength=151) for v in views]
    # Same objects in every view (crops of one scene), in similar amounts.
    assert all(set(np.flatnonzero(h)) & set(np.flatnonzero(hist[0])) for h in hist)


def test_more_cities_get_distinct_styles():
    names = [style_for(i).name for i in range(8)]
    assert len(set(names)) == 8
    assert {tuple(style_for(i).objects) for i in range(8)}.__len__() >= 6


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="--cities"):
        synthesize(tmp_path, cities=1)
    with pytest.raises(ValueError, match="--places"):
        synthesize(tmp_path, places=2)


def test_a_null_city_has_only_the_classes_every_city_shares(tmp_path, small_corpus):
    out = tmp_path / "with_null"
    meta = synthesize(out, cities=2, places=12, views=3, size=64, seed=5, workers=1, null_city=True)
    assert [c["name"] for c in meta["cities"]] == ["towerville", "signburg", "nullham"]
    assert meta["images"] == 3 * 12 * 3
    own = {CLASS[o] for st in STYLES for o in st.objects}

    def classes(city: str) -> set[int]:
        found: set[int] = set()
        for p in sorted((out / "labels" / city).glob("*.png")):
            found |= set(np.unique(np.asarray(Image.open(p))).tolist())
        return found

    shared = classes("nullham")
    assert shared and not shared & own  # nothing of any city's own
    for city in ("towerville", "signburg"):
        assert shared <= classes(city) | {0}  # and what it has, the others have too
    # the other cities are exactly the corpus without the null city
    for city in ("towerville", "signburg", "labels/towerville", "labels/signburg"):
        assert _digest(out / city) == _digest(small_corpus / city)
