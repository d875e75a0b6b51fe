"""Maps of where the explanations' objects are, and ``places.geojson``.

Pure: the analyze stage's places table (PLACES, one row per model × located test
place) in, a matplotlib figure per city and a GeoJSON text out. The maps need no
tiles and no network: points in metres east and north of the city's centre, with a
scale bar.
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from citylens.data.coords import local_metres  # noqa: E402

__all__ = ["by_place", "place_maps", "places_geojson"]

_MAX_LEGEND = 8


def by_place(places: pd.DataFrame) -> pd.DataFrame:
    """The places table pooled over models: one row per (city, place).

    Columns: ``city, place, lat, lon, images, wrong`` (share of the models' calls on
    its views that were wrong), ``top_name`` (the top object most models name there;
    ties by name), ``key_name``, ``key_r_p`` (mean over models).
    """
    p = places[places.lat.notna()].copy()
    p["wrong_calls"] = p.explained - p.correct
    keys = ["city", "place"]
    pooled = p.groupby(keys, sort=True).agg(
        lat=("lat", "first"),
        lon=("lon", "first"),
        images=("images", "max"),
        calls=("explained", "sum"),
        wrong_calls=("wrong_calls", "sum"),
        key_name=("key_name", "first"),
        key_r_p=("key_r_p", "mean"),
    )
    pooled["wrong"] = pooled.wrong_calls / pooled.calls.where(pooled.calls > 0)
    named = p[p.top_name.notna()]
    votes = named.groupby([*keys, "top_name"]).size().rename("n").reset_index()
    votes = votes.sort_values([*keys, "n", "top_name"], ascending=[True, True, False, True])
    pooled["top_name"] = votes.drop_duplicates(keys).set_index(keys).top_name
    return pooled.reset_index().drop(columns=["wrong_calls"])


def _scale_bar(ax, x: np.ndarray) -> None:
    span = float(np.ptp(x)) if len(x) else 0.0
    if span <= 0:
        span = 100.0
    raw = span / 4
    length = min((m * 10**e for e in range(0, 6) for m in (1, 2, 5)), key=lambda v: abs(v - raw))
    ax.apply_aspect()  # the limits the equal aspect gives, not the data's
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    left, base = x0 + 0.05 * (x1 - x0), y0 + 0.06 * (y1 - y0)
    ax.plot([left, left + length], [base, base], color="k", lw=3, solid_capstyle="butt")
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.text(left + length / 2, base + 0.02 * (y1 - y0), label, ha="center", va="bottom", fontsize=8)


def place_maps(city_places: pd.DataFrame, city: str, color, key: str | None = None) -> Figure:
    """Three maps of one city's located test places.

    1. Each place coloured by the top object inside its explanations (pooled over
       models, :func:`by_place`).
    2. The misclassified places, sized and shaded by the share of wrong calls.
    3. Each place's share of the city's R_p of its key object (mean over models).

    Args:
        city_places: :func:`by_place` rows of one city.
        city: Its name (titles).
        color: Its colour (the panels' frames).
        key: The key object's name (the third panel's title).

    Returns:
        A 3-panel figure, east and north in metres from the city's centre.
    """
    d = city_places.reset_index(drop=True)
    x, y = local_metres(d.lat.to_numpy(), d.lon.to_numpy())
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), squeeze=False)
    axes = axes[0]
    # 1: top object
    counts = d.top_name.value_counts()
    shown = list(counts.index[:_MAX_LEGEND])
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(shown):
        sel = (d.top_name == name).to_numpy()
        axes[0].scatter(x[sel], y[sel], s=18, color=cmap(i % 10), label=f"{name} ({sel.sum()})")
    rest = (~d.top_name.isin(shown)).to_numpy()
    if rest.any():
        axes[0].scatter(x[rest], y[rest], s=12, color="0.7", label=f"other / none ({rest.sum()})")
    axes[0].legend(fontsize=7, loc="upper right", framealpha=0.8)
    axes[0].set_title(f"{city}: top object inside the explanations", fontsize=10)
    # 2: misclassified
    wrong = d.wrong.fillna(0).to_numpy()
    bad = wrong > 0
    axes[1].scatter(x[~bad], y[~bad], s=10, color="0.8", label=f"all right ({(~bad).sum()})")
    if bad.any():
        axes[1].scatter(
            x[bad],
            y[bad],
            s=10 + 40 * wrong[bad],
            c=wrong[bad],
            cmap="Reds",
            vmin=0,
            vmax=1,
            edgecolors="k",
            linewidths=0.3,
            label=f"misclassified by some model ({bad.sum()})",
        )
    axes[1].legend(fontsize=7, loc="upper right", framealpha=0.8)
    axes[1].set_title(f"{city}: misclassified places (share of wrong calls)", fontsize=10)
    # 3: contribution to the key object's R_p
    share = d.key_r_p.to_numpy(dtype=np.float64)
    ok = np.isfinite(share)
    if ok.any():
        sc = axes[2].scatter(x[ok], y[ok], s=18, c=share[ok], cmap="viridis")
        fig.colorbar(sc, ax=axes[2], fraction=0.046, pad=0.02, label="share of R_p")
    if (~ok).any():
        axes[2].scatter(x[~ok], y[~ok], s=8, color="0.85")
    axes[2].set_title(
        f"{city}: where R_p of '{key}' comes from" if key else f"{city}: no key object",
        fontsize=10,
    )
    for ax in axes:
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("east (m)", fontsize=8)
        ax.set_ylabel("north (m)", fontsize=8)
        ax.tick_params(labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(color)
            spine.set_linewidth(3)
    fig.tight_layout()
    for ax in axes:
        _scale_bar(ax, x)
    return fig


def _number(v):
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return None if not math.isfinite(f) else f


def places_geojson(places: pd.DataFrame, ar: pd.Series | None = None) -> str:
    """``places.geojson``: one Point feature per located test place (RFC 7946).

    Coordinates are ``[longitude, latitude]`` in WGS84 degrees (7 decimals); no
    ``crs`` member. Properties: ``city``, ``place``, ``split`` (``test``), ``images``,
    ``key_object``, per model ``top_object:<model>``, ``correct:<model>`` (the share of
    its views it classified right), ``key_r_p:<model>`` (the place's share of the
    city's R_p of its key object), and ``ar`` (mean AR over the place's images and
    model pairs) when ``ar`` is given.

    Args:
        places: The places table (PLACES).
        ar: ``(city, place) -> mean AR``, optional.
    """
    features = []
    p = places[places.lat.notna() & places.lon.notna()]
    for (city, place), rows in p.groupby(["city", "place"], sort=True):
        first = rows.iloc[0]
        props: dict = {
            "city": city,
            "place": place,
            "split": "test",
            "images": int(rows.images.max()),
            "key_object": first.key_name if isinstance(first.key_name, str) else None,
        }
        for r in rows.sort_values("model").itertuples():
            props[f"top_object:{r.model}"] = r.top_name if isinstance(r.top_name, str) else None
            props[f"correct:{r.model}"] = round(r.correct / r.explained, 6) if r.explained else None
            props[f"key_r_p:{r.model}"] = _number(r.key_r_p)
        if ar is not None:
            props["ar"] = _number(ar.get((city, place)))
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Point",
                    "coordinates": [round(float(first.lon), 7), round(float(first.lat), 7)],
                },
                "properties": props,
            }
        )
    return json.dumps({"type": "FeatureCollection", "features": features}, allow_nan=False)
