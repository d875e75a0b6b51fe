"""The synthetic city corpus: ``citylens synth OUT --cities 2 --places N --views V``.

Layout (what a real dataset would look like)::

    OUT/<city>/<place>_<view>.jpg          street-view images
    OUT/labels/<city>/<place>_<view>.png   ADE20K class index per pixel (uint8)
    OUT/classes.csv                        the vocabulary (ADE20K, 150 classes)
    OUT/corpus.json                        what was generated, and the place regex

Each place is one scene seen from several views (shifted crops, mirror images, mild
photometric jitter), so a split that is not grouped by place would leak. Output is a
pure function of the arguments: same seed, same bytes.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from citylens.data.scenes import NULL_STYLE, CityStyle, render_scene, style_for
from citylens.vocabulary import ade20k

__all__ = ["PLACE_REGEX", "render_place", "synthesize"]

PLACE_REGEX = r"^(?P<place>.+)_\d+$"
_MARGIN = 1.25  # scene canvas / view size


def render_place(
    style: CityStyle, place: int, views: int, size: int, seed: int, city_index: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """All views of one place: ``[(image uint8 (S, S, 3), labels uint8 (S, S)), ...]``."""
    rng = np.random.default_rng([seed, city_index, place])
    canvas = int(round(size * _MARGIN))
    scene, labels = render_scene(style, canvas, canvas, rng)
    light = rng.uniform(0.8, 1.15)  # same lighting distribution for every city
    tint = rng.normal(1.0, 0.03, 3)  # per-place white balance, not per-city
    out = []
    for v in range(views):
        vr = np.random.default_rng([seed, city_index, place, v])
        y0, x0 = vr.integers(0, canvas - size + 1, size=2)
        img = scene[y0 : y0 + size, x0 : x0 + size].copy()
        lab = labels[y0 : y0 + size, x0 : x0 + size].copy()
        if vr.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        gain = light * vr.uniform(0.92, 1.08) * tint
        contrast = vr.uniform(0.9, 1.1)
        img = (img - 128.0) * contrast + 128.0
        img = img * gain + vr.normal(0, 4.0, img.shape)
        out.append((np.clip(img, 0, 255).astype(np.uint8), np.ascontiguousarray(lab)))
    return out


def _write_place(args: tuple) -> int:
    out, style, place, views, size, seed, city_index, quality = args
    img_dir = Path(out) / style.name
    lab_dir = Path(out) / "labels" / style.name
    for v, (img, lab) in enumerate(render_place(style, place, views, size, seed, city_index)):
        stem = f"p{place:05d}_{v:02d}"
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        (img_dir / f"{stem}.jpg").write_bytes(buf.getvalue())
        Image.fromarray(lab, mode="L").save(lab_dir / f"{stem}.png", optimize=False)
    return views


def synthesize(
    out: str | os.PathLike,
    cities: int = 2,
    places: int = 40,
    views: int = 4,
    size: int = 128,
    seed: int = 0,
    quality: int = 90,
    workers: int | None = None,
    null_city: bool = False,
) -> dict:
    """Write a synthetic corpus to a local folder.

    Args:
        out: Output folder (created).
        cities: Number of cities (≥ 2); the first two are ``towerville`` (skyscrapers,
            wide roads, bare ground, streetlights) and ``signburg`` (low buildings,
            signboards, fences, plants).
        places: Places per city.
        views: Views per place.
        size: Side of the square images in pixels (≥ 32).
        seed: Seed; the corpus is a pure function of the arguments.
        quality: JPEG quality.
        workers: Processes (default: CPU count).
        null_city: Add ``nullham``, a city of shared classes only (after the others;
            theirs do not change): the known answer of the causal check, a city no
            object of its own identifies.

    Returns:
        The corpus description also written to ``OUT/corpus.json``.
    """
    if cities < 2:
        raise ValueError(f"--cities must be at least 2, got {cities}")
    if places < 3:
        raise ValueError(f"--places must be at least 3 (train/val/test), got {places}")
    if views < 1 or size < 32:
        raise ValueError(f"need --views ≥ 1 and --size ≥ 32, got {views} and {size}")
    out = Path(out)
    styles = [style_for(i) for i in range(cities)] + ([NULL_STYLE] if null_city else [])
    for st in styles:
        (out / st.name).mkdir(parents=True, exist_ok=True)
        (out / "labels" / st.name).mkdir(parents=True, exist_ok=True)
    (out / "classes.csv").write_text(ade20k().to_csv())
    jobs = [
        (str(out), st, p, views, size, seed, ci, quality)
        for ci, st in enumerate(styles)
        for p in range(places)
    ]
    workers = workers or os.cpu_count() or 1
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            total = sum(pool.map(_write_place, jobs, chunksize=8))
    else:
        total = sum(map(_write_place, jobs))
    meta = {
        "cities": [asdict(st) for st in styles],
        "places": places,
        "views": views,
        "size": size,
        "seed": seed,
        "images": total,
        "place_regex": PLACE_REGEX,
        "image_pattern": "{city}/{place}_{view}.jpg",
        "label_pattern": "labels/{city}/{place}_{view}.png",
    }
    (out / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
