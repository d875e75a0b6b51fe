"""The train/val/test split: grouped by place, balanced by images, stable as a study grows.

Two photos of one place look alike, so a split by image would let a model be tested on
views of places it trained on: every split is drawn over places. A study that grows
(new images of known cities, ``train.retrain: new_city``) keeps every known place's
split, so models trained before never meet a test image they trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from citylens.tables import SPLITS

__all__ = ["KnownSplits", "assign_splits"]


def _place_key(seed: int, city: str, place: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{city}\0{place}".encode(), digest_size=8).digest()


def assign_splits(
    cities: Sequence[str],
    places: Sequence[str],
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    image_ids: Sequence[str] | None = None,
    known: KnownSplits | None = None,
) -> np.ndarray:
    """Train/val/test split grouped by place, balanced by image count, per city.

    Places of each city are put in a seeded pseudo-random order (a hash of seed, city
    and place, so other cities never change a city's split) and dealt to the split
    furthest below its share of the city's images.

    With ``known`` (the splits of an earlier manifest: a study that grew), a known
    place keeps its split, and so does a place holding a known image (by id, should
    the place's name have changed); if its known images disagree, the first of train,
    val, test wins, so no image that trained a model becomes a test image. Only the
    new places are dealt, around the known ones' image counts.

    Args:
        cities: ``(I,)`` city of each image.
        places: ``(I,)`` place of each image.
        ratios: train/val/test proportions (normalised).
        seed: Split seed.
        image_ids: ``(I,)`` image ids (needed with ``known``).
        known: Earlier splits to keep.

    Returns:
        ``(I,)`` array of ``"train" | "val" | "test"``.

    Raises:
        ValueError: a city has fewer than three places.
    """
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ValueError(f"split ratios must be three positive numbers, got {ratios}")
    if known is not None and image_ids is None:
        raise ValueError("assign_splits: known splits need the image ids")
    r = np.asarray(ratios, dtype=np.float64) / float(sum(ratios))
    cities, places = np.asarray(cities), np.asarray(places)
    out = np.empty(len(cities), dtype=object)
    for city in np.unique(cities):
        idx = np.flatnonzero(cities == city)
        groups: dict[str, list[int]] = {}
        for i in idx:
            groups.setdefault(str(places[i]), []).append(int(i))
        if len(groups) < 3:
            raise ValueError(
                f"city {str(city)!r} has {len(groups)} place(s); a train/val/test split grouped "
                "by place needs at least 3"
            )
        target = r * len(idx)
        count = np.zeros(3)
        kept = {} if known is None else known.of(str(city), groups, image_ids)
        for place, k in kept.items():
            count[k] += len(groups[place])
            for i in groups[place]:
                out[i] = SPLITS[k]
        new = sorted(
            (p for p in groups if p not in kept), key=lambda p: _place_key(seed, str(city), p)
        )
        for place in new:
            # An empty split gets the next place (so, from scratch, the first three places
            # seed train, val and test); after that each place goes to the split furthest
            # below its share of images.
            empty = np.flatnonzero(count == 0)
            k = int(empty[0]) if len(empty) else int(np.argmax((target - count) / target))
            count[k] += len(groups[place])
            for i in groups[place]:
                out[i] = SPLITS[k]
    return out.astype(str)


@dataclass(frozen=True)
class KnownSplits:
    """The splits of an earlier manifest, to keep when a study grows.

    Attributes:
        places: ``(city, place) -> split``.
        images: ``image_id -> split``.
    """

    places: Mapping[tuple[str, str], str]
    images: Mapping[str, str]

    @classmethod
    def of_manifest(cls, manifest: pa.Table) -> KnownSplits:
        """The splits a manifest (with image_id, city, place, split) assigned."""
        cols = manifest.select(["image_id", "city", "place", "split"]).to_pydict()
        rows = list(zip(cols["image_id"], cols["city"], cols["place"], cols["split"]))
        return cls({(c, p): s for _, c, p, s in rows}, {i: s for i, _, _, s in rows})

    def of(self, city: str, groups: Mapping[str, list[int]], image_ids) -> dict[str, int]:
        """Place -> index into SPLITS of each of ``city``'s places that has a known split."""
        kept: dict[str, int] = {}
        for place, members in groups.items():
            seen = [self.images.get(str(image_ids[i])) for i in members]
            seen.append(self.places.get((city, place)))
            ks = [SPLITS.index(s) for s in seen if s is not None]
            if ks:
                kept[place] = min(ks)  # train before val before test
        return kept
