"""The train/val/test split: grouped by place, balanced by images, stable as a study grows.

Two photos of one place look alike, so a split by image would let a model be tested on
views of places it trained on: every split is drawn over places. Two places twenty
metres apart look alike too: with ``split.block_m`` the split is drawn over grid cells
of that size (:func:`citylens.data.coords.cell_of`), every place in a cell going to the
same split; a place without coordinates stays a unit of its own. A study that grows
(new images of known cities, ``train.retrain: new_city``) keeps every known place's
split, and a new place in a known cell takes that cell's split, so models trained
before never meet a test image they trained on, or one from beside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from citylens.data.coords import cell_of, place_centres
from citylens.tables import SPLITS

__all__ = ["KnownSplits", "assign_splits", "place_cells"]


def _place_key(seed: int, city: str, place: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{city}\0{place}".encode(), digest_size=8).digest()


def assign_splits(
    cities: Sequence[str],
    places: Sequence[str],
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    image_ids: Sequence[str] | None = None,
    known: KnownSplits | None = None,
    lat: Sequence[float] | None = None,
    lon: Sequence[float] | None = None,
    block_m: float | None = None,
) -> np.ndarray:
    """Train/val/test split grouped by place (or grid cell), balanced by images, per city.

    The units of each city (its places; with ``block_m``, the grid cells its places lie
    in, a place's position being the centre of its images') are put in a seeded
    pseudo-random order (a hash of seed, city and unit, so other cities never change a
    city's split) and dealt to the split furthest below its share of the city's images.

    With ``known`` (the splits of an earlier manifest: a study that grew), a known
    place keeps its split, and so does a place holding a known image (by id, should
    the place's name have changed); if its known images disagree, the first of train,
    val, test wins, so no image that trained a model becomes a test image. A new place
    in a cell that holds known places (now or in the earlier manifest) takes that
    cell's split (the first, should they disagree). Only wholly new units are dealt,
    around the known ones' image counts.

    Args:
        cities: ``(I,)`` city of each image.
        places: ``(I,)`` place of each image.
        ratios: train/val/test proportions (normalised).
        seed: Split seed.
        image_ids: ``(I,)`` image ids (needed with ``known``).
        known: Earlier splits to keep.
        lat: ``(I,)`` latitude in degrees, NaN where unknown (needed with ``block_m``).
        lon: ``(I,)`` longitude in degrees.
        block_m: Cell size in metres; None: every place is its own unit.

    Returns:
        ``(I,)`` array of ``"train" | "val" | "test"``.

    Raises:
        ValueError: a city has fewer than three places (or cells).
    """
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ValueError(f"split ratios must be three positive numbers, got {ratios}")
    if known is not None and image_ids is None:
        raise ValueError("assign_splits: known splits need the image ids")
    if block_m is not None and (lat is None or lon is None):
        raise ValueError("assign_splits: a blocked split needs every image's lat and lon")
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
        unit_of = (
            {p: p for p in groups}
            if block_m is None
            else place_cells(
                groups, np.asarray(lat, np.float64), np.asarray(lon, np.float64), block_m
            )
        )
        if known is not None and block_m is not None:  # a known place keeps its cell
            unit_of = {p: known.units.get((str(city), p), u) for p, u in unit_of.items()}
        units: dict[str, list[str]] = {}
        for place, unit in unit_of.items():
            units.setdefault(unit, []).append(place)
        if len(units) < 3:
            raise ValueError(
                f"city {str(city)!r} has its {len(groups)} places in {len(units)} cell(s) of "
                f"split.block_m = {block_m:g} m; a train/val/test split needs at least 3 "
                "(choose a smaller block_m)"
            )
        target = r * len(idx)
        count = np.zeros(3)
        kept = {} if known is None else known.of(str(city), groups, image_ids)
        for place, k in kept.items():
            count[k] += len(groups[place])
            for i in groups[place]:
                out[i] = SPLITS[k]
        for unit, members in units.items():
            ks = [kept[p] for p in members if p in kept]
            if known is not None and (k := known.cells.get((str(city), unit))) is not None:
                ks.append(k)
            if not ks:
                continue
            for place in members:
                if place not in kept:
                    count[min(ks)] += len(groups[place])
                    for i in groups[place]:
                        out[i] = SPLITS[min(ks)]
        new = sorted(
            (u for u, members in units.items() if out[groups[members[0]][0]] is None),
            key=lambda u: _place_key(seed, str(city), u),
        )
        for unit in new:
            # An empty split gets the next unit (so, from scratch, the first three units
            # seed train, val and test); after that each unit goes to the split furthest
            # below its share of images.
            empty = np.flatnonzero(count == 0)
            k = int(empty[0]) if len(empty) else int(np.argmax((target - count) / target))
            for place in units[unit]:
                count[k] += len(groups[place])
                for i in groups[place]:
                    out[i] = SPLITS[k]
    return out.astype(str)


def place_cells(
    groups: Mapping[str, list[int]], lat: np.ndarray, lon: np.ndarray, block_m: float
) -> dict[str, str]:
    """Each place's unit of a blocked split: its grid cell, or itself without coordinates.

    Args:
        groups: place -> indices of its images into ``lat`` / ``lon``.
        lat: ``(I,)`` degrees, NaN where unknown.
        lon: ``(I,)`` degrees.
        block_m: Cell size in metres.

    Returns:
        place -> unit key (NUL, ``cell <band> <column>``; or the place itself: no file
        stem starts with NUL, so the two never collide).
    """
    names = list(groups)
    member = [(g, i) for g, p in enumerate(names) for i in groups[p]]
    g_of = np.asarray([g for g, _ in member], np.int64)
    rows = np.asarray([i for _, i in member], np.int64)
    ok = np.isfinite(lat[rows]) & np.isfinite(lon[rows])
    centres = place_centres(lat[rows][ok], lon[rows][ok], g_of[ok], len(names))
    has = np.isfinite(centres[:, 0])
    cells = cell_of(np.where(has, centres[:, 0], 0.0), np.where(has, centres[:, 1], 0.0), block_m)
    return {p: f"\0cell {cells[g, 0]} {cells[g, 1]}" if has[g] else p for g, p in enumerate(names)}


@dataclass(frozen=True)
class KnownSplits:
    """The splits of an earlier manifest, to keep when a study grows.

    Attributes:
        places: ``(city, place) -> split``.
        images: ``image_id -> split``.
        cells: ``(city, unit) -> index into SPLITS`` of a blocked split's cells that
            held known places (the first split, should they disagree).
        units: ``(city, place) -> unit``: the cell each known place was in, which it
            keeps (new images could move its centre over a border).
    """

    places: Mapping[tuple[str, str], str]
    images: Mapping[str, str]
    cells: Mapping[tuple[str, str], int] = field(default_factory=dict)
    units: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def of_manifest(cls, manifest: pa.Table, block_m: float | None = None) -> KnownSplits:
        """The splits a manifest assigned.

        It has image_id, city, place, split; and lat, lon for a blocked split's cells.
        """
        cols = manifest.select(["image_id", "city", "place", "split"]).to_pydict()
        rows = list(zip(cols["image_id"], cols["city"], cols["place"], cols["split"]))
        cells: dict[tuple[str, str], int] = {}
        units: dict[tuple[str, str], str] = {}
        if block_m is not None and "lat" in manifest.column_names:
            lat = manifest["lat"].to_numpy(zero_copy_only=False).astype(np.float64)
            lon = manifest["lon"].to_numpy(zero_copy_only=False).astype(np.float64)
            by_city: dict[str, dict[str, list[int]]] = {}
            for i, (_, c, p, _) in enumerate(rows):
                by_city.setdefault(c, {}).setdefault(p, []).append(i)
            for c, groups in by_city.items():
                for p, unit in place_cells(groups, lat, lon, block_m).items():
                    k = SPLITS.index(rows[groups[p][0]][3])
                    cells[(c, unit)] = min(k, cells.get((c, unit), k))
                    units[(c, p)] = unit
        images = {i: s for i, _, _, s in rows}
        return cls({(c, p): s for _, c, p, s in rows}, images, cells, units)

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
