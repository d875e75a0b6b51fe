"""The analyze stage's places table: per-place sums over the overlap and explain shards.

Only for a study whose ingest located some images (its record's ``coords``); one Ray
task per overlap shard sums the pixels inside each test place's explanations at the
report's θ, and the driver adds the predictions from the explain shards' ``pred``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from citylens.analysis.places import (
    PlaceList,
    key_objects,
    place_list,
    place_pixels,
    place_table,
)
from citylens.pipeline.committed import read_manifest
from citylens.storage import Store

__all__ = ["PlaceMaps", "places_of_shard"]


@ray.remote
def places_of_shard(store: Store, rel: str, places: PlaceList, theta: float) -> dict:
    """One overlap shard's pixels inside explanations at θ, summed per test place."""
    cols = ["image_id", "model", "theta", "class_pixels_in_mask"]
    return place_pixels(store.read_table(rel, columns=cols), places, theta)


class PlaceMaps:
    """The per-place reduction of one analyze run, started beside the others."""

    def __init__(self, store: Store, places: PlaceList, refs: list, theta: float) -> None:
        self.store, self.places, self.refs, self.theta = store, places, refs, theta

    @classmethod
    def start(cls, store: Store, overlap_files: list[str], theta: float) -> PlaceMaps | None:
        """Launch the per-shard tasks; None when no test image has coordinates."""
        if not (store.record("ingest") or {}).get("coords"):
            return None
        m = read_manifest(store, ["image_id", "city", "place", "split", "lat", "lon"])
        m = m.filter(pc.equal(m["split"], "test"))
        lat = m["lat"].to_numpy(zero_copy_only=False).astype(np.float64)
        lon = m["lon"].to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.isfinite(lat).any():
            return None
        places = place_list(
            m["image_id"].to_pylist(), m["city"].to_pylist(), m["place"].to_pylist(), lat, lon
        )
        ref = ray.put(places)
        refs = [places_of_shard.remote(store, f, ref, theta) for f in overlap_files]
        return cls(store, places, refs, theta)

    def _pixels(self) -> dict:
        n = len(self.places)
        pixels: dict = {}
        while self.refs:
            for model, (rows, sums, images) in ray.get(self.refs.pop(0)).items():
                acc = pixels.setdefault(
                    model, (np.zeros((n, sums.shape[1]), np.int64), np.zeros(n, np.int64))
                )
                acc[0][rows] += sums
                acc[1][rows] += images
        return pixels

    def _correct(self, explain_files: list[str], cities: list[str]) -> dict:
        n, label, out = len(self.places), {c: i for i, c in enumerate(cities)}, {}
        for rel in explain_files:
            t = self.store.read_table(rel, columns=["image_id", "city", "model", "pred"])
            row = self.places.of(t["image_id"].to_pylist())
            truth = np.asarray([label[c] for c in t["city"].to_pylist()], np.int64)
            hit = (t["pred"].to_numpy().astype(np.int64) == truth).astype(np.int64)
            model = np.asarray(t["model"].to_pylist(), object)
            for name in set(model.tolist()):
                sel = (model == name) & (row >= 0)
                acc = out.setdefault(name, (np.zeros(n, np.int64), np.zeros(n, np.int64)))
                np.add.at(acc[0], row[sel], hit[sel])
                np.add.at(acc[1], row[sel], 1)
        return out

    def table(
        self,
        explain_files: list[str],
        cities: list[str],
        totals: dict,
        means: pa.Table,
        distinctive: pa.Table,
        names,
    ) -> pa.Table:
        """The places table (schema :data:`~citylens.tables.PLACES`).

        Args:
            explain_files: The explain shards (their predictions).
            cities: The study's cities in class order.
            totals: The R_p sums ``{(model, city, θ): [Σ M, Σ N, images, ...]}``.
            means: The object means table (a city's key object when none is tested).
            distinctive: The distinctive-objects table (each city's key object).
            names: Class names.
        """
        keys = key_objects(distinctive.to_pandas(), means.to_pandas(), self.theta)
        city_pixels = {
            (model, city): sums[1]
            for (model, city, th), sums in totals.items()
            if abs(th - self.theta) < 1e-6
        }
        return place_table(
            self.places,
            self._pixels(),
            self._correct(explain_files, cities),
            city_pixels,
            keys,
            names,
        )
