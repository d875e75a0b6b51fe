"""Procedural street scenes with per-pixel ADE20K labels.

A scene is a frontal street view: sky, a row of buildings on the horizon, a road in
perspective with sidewalks, and city-specific objects. Every city draws from the same
palette, lighting and noise, and the classes all cities share (sky, building, road,
sidewalk) follow the same distributions everywhere; cities differ only in *which
objects appear* (their :class:`CityStyle`), so a classifier must look at those objects
to tell the cities apart, and R_p can find them.

Pure numpy; :func:`render_scene` returns ``(image uint8 (H, W, 3), labels uint8 (H, W))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CLASS", "NULL_STYLE", "STYLES", "CityStyle", "render_scene", "style_for"]

# ADE20K class indices (objectInfo150.csv) used by the generator.
CLASS = {
    "wall": 1,
    "building": 2,
    "sky": 3,
    "tree": 5,
    "road": 7,
    "grass": 10,
    "sidewalk": 12,
    "person": 13,
    "earth": 14,
    "plant": 18,
    "car": 21,
    "fence": 33,
    "signboard": 44,
    "skyscraper": 49,
    "awning": 87,
    "streetlight": 88,
    "pole": 94,
    "flag": 150,
}

# Shared palette: base RGB per class; every city uses the same one.
_PALETTE = {
    "sky": (140, 180, 228),
    "road": (92, 92, 98),
    "sidewalk": (172, 166, 156),
    "earth": (134, 104, 74),
    "grass": (92, 158, 72),
    "plant": (58, 128, 52),
    "tree": (52, 112, 44),
    "wall": (164, 152, 140),
    "fence": (112, 84, 62),
    "skyscraper": (70, 130, 175),
    "pole": (60, 60, 64),
    "streetlight": (150, 150, 150),
    "person": (70, 60, 90),
}
_FACADES = np.array([(205, 190, 160), (176, 176, 180), (160, 92, 70), (226, 222, 210)])
_VIVID = np.array([(210, 40, 40), (236, 196, 30), (40, 90, 200), (30, 160, 90), (240, 240, 240)])


@dataclass(frozen=True)
class CityStyle:
    """How one synthetic city looks.

    Attributes:
        name: City name (folder name).
        objects: Signature objects drawn in this city's scenes (keys of CLASS).
        road_width: ``(lo, hi)`` road width at the bottom edge, as a fraction of width.
        building_height: ``(lo, hi)`` building height as a fraction of the horizon height.
    """

    name: str
    objects: tuple[str, ...]
    road_width: tuple[float, float] = (0.45, 0.6)
    building_height: tuple[float, float] = (0.3, 0.55)


STYLES: tuple[CityStyle, ...] = (
    CityStyle("towerville", ("skyscraper", "earth", "streetlight")),
    CityStyle("signburg", ("signboard", "fence", "plant")),
    CityStyle("treeham", ("tree", "grass", "wall")),
    CityStyle("carford", ("car", "pole", "awning")),
    CityStyle("flagmoor", ("flag", "person", "streetlight")),
)
# A city of shared classes only (sky, buildings, road, sidewalk): nothing of its own to
# be recognised by. Beside it, a model must find each other city by that city's own
# objects; without it, a model may know one of two cities by the other's absence.
NULL_STYLE = CityStyle("nullham", ())
_POOL = (
    "skyscraper",
    "earth",
    "streetlight",
    "signboard",
    "fence",
    "plant",
    "tree",
    "grass",
    "wall",
    "car",
    "pole",
    "awning",
    "flag",
    "person",
)


def style_for(index: int) -> CityStyle:
    """The style of city ``index``: the five named ones, then seeded combinations."""
    if index < len(STYLES):
        return STYLES[index]
    rng = np.random.default_rng([7919, index])
    objects = tuple(sorted(rng.choice(len(_POOL), size=3, replace=False)))
    return CityStyle(f"city{index:02d}", tuple(_POOL[i] for i in objects))


class _Canvas:
    """Image + label buffers with a few vectorised drawing primitives."""

    def __init__(self, h: int, w: int, rng: np.random.Generator) -> None:
        self.h, self.w, self.rng = h, w, rng
        self.img = np.zeros((h, w, 3), np.float32)
        self.lab = np.zeros((h, w), np.uint8)
        self.yy, self.xx = np.mgrid[0:h, 0:w]

    def paint(self, mask: np.ndarray, cls: str, color, jitter: float = 8.0) -> None:
        c = np.asarray(color, np.float32) + self.rng.normal(0, jitter, 3)
        self.img[mask] = c
        self.lab[mask] = CLASS[cls]

    def rect(self, y0, y1, x0, x1) -> np.ndarray:
        y0, y1 = max(int(y0), 0), min(int(y1), self.h)
        x0, x1 = max(int(x0), 0), min(int(x1), self.w)
        m = np.zeros((self.h, self.w), bool)
        if y1 > y0 and x1 > x0:
            m[y0:y1, x0:x1] = True
        return m

    def ellipse(self, cy, cx, ry, rx) -> np.ndarray:
        return ((self.yy - cy) / max(ry, 1)) ** 2 + ((self.xx - cx) / max(rx, 1)) ** 2 <= 1.0

    def texture(self, mask: np.ndarray, amount: float) -> None:
        n = int(mask.sum())
        if n:
            self.img[mask] += self.rng.normal(0, amount, (n, 1)).astype(np.float32)


def _windows(cv: _Canvas, y0, y1, x0, x1, color, step: int, dark: float) -> None:
    """Window grid on a facade: darker cells, same label as the facade."""
    cell = cv.rect(y0 + 2, y1 - 2, x0 + 2, x1 - 2)
    grid = (((cv.yy - y0) % step) < step // 2) & (((cv.xx - x0) % step) < step // 2)
    cv.img[cell & grid] = np.asarray(color, np.float32) * dark


def _sky_and_buildings(cv: _Canvas, style: CityStyle, horizon: int) -> None:
    r = cv.rng
    sky = cv.rect(0, horizon, 0, cv.w)
    cv.paint(sky, "sky", _PALETTE["sky"], 6)
    cv.img[sky] += (cv.yy[sky, None] * 0.25).astype(np.float32)  # brighter towards horizon
    x = r.uniform(-0.1, 0.0) * cv.w
    while x < cv.w:
        bw = r.uniform(0.15, 0.3) * cv.w
        bh = r.uniform(*style.building_height) * horizon
        color = _FACADES[r.integers(len(_FACADES))]
        m = cv.rect(horizon - bh, horizon, x, x + bw)
        cv.paint(m, "building", color, 10)
        _windows(cv, horizon - bh, horizon, x, x + bw, color, 6, 0.55)
        x += bw + r.uniform(0.0, 0.08) * cv.w
    if "skyscraper" in style.objects:  # towers stand in front of the building row
        for _ in range(r.integers(1, 4)):
            x0 = r.uniform(-0.05, 0.85) * cv.w
            bw = r.uniform(0.15, 0.26) * cv.w
            top = r.uniform(0.0, 0.15) * horizon
            m = cv.rect(top, horizon, x0, x0 + bw)
            cv.paint(m, "skyscraper", _PALETTE["skyscraper"], 6)
            mullions = m & (((cv.xx - int(x0)) % 3) == 0)  # glass curtain wall
            cv.img[mullions] = (200, 215, 230)


def _street(cv: _Canvas, style: CityStyle, horizon: int) -> None:
    """Road in perspective, sidewalks on either side (with patches of bare earth, if any)."""
    r = cv.rng
    cx = cv.w * r.uniform(0.4, 0.6)
    bottom = r.uniform(*style.road_width) * cv.w / 2
    t = np.clip((cv.yy - horizon) / max(cv.h - horizon, 1), 0, 1)
    half = 0.04 * cv.w + t * bottom
    ground = cv.yy >= horizon
    road = ground & (np.abs(cv.xx - cx) <= half)
    cv.paint(road, "road", _PALETTE["road"], 5)
    cv.texture(road, 4)
    dashes = road & (np.abs(cv.xx - cx) <= 0.5 + t * 1.5) & (((cv.yy // 5) % 2) == 0)
    cv.img[dashes] = (235, 235, 220)
    side = ground & ~road
    left, right = side & (cv.xx < cx), side & (cv.xx >= cx)
    for strip in (left, right):
        cv.paint(strip, "sidewalk", _PALETTE["sidewalk"], 6)
        cv.texture(strip, 3)
    if "earth" in style.objects:
        # Patches of bare earth on the sidewalks, never instead of them: every city has
        # the same sidewalks along its roads, so none is told by a shared class's absence.
        for _ in range(r.integers(3, 6)):
            cy = horizon + r.uniform(0.1, 0.9) * (cv.h - horizon)
            cx_e = r.uniform(0, 1) * cv.w
            m = cv.ellipse(cy, cx_e, r.uniform(0.03, 0.06) * cv.h, r.uniform(0.05, 0.1) * cv.w)
            cv.paint(m & side, "earth", _PALETTE["earth"], 6)
            cv.texture(m & side, 10)
    if "grass" in style.objects:
        cv.paint(side & (cv.yy < horizon + 0.12 * cv.h), "grass", _PALETTE["grass"], 8)
        cv.texture(side & (cv.lab == CLASS["grass"]), 12)


def _objects(  # noqa: PLR0915 (one drawing recipe, object by object: its draws fix the corpus)
    cv: _Canvas, style: CityStyle, horizon: int, road_edge: np.ndarray
) -> None:
    r, h, w = cv.rng, cv.h, cv.w
    obj = set(style.objects)
    if "wall" in obj:
        cv.paint(cv.rect(horizon - 0.1 * h, horizon + 0.03 * h, 0, w), "wall", _PALETTE["wall"])
        cv.texture(cv.lab == CLASS["wall"], 5)
    if "fence" in obj:
        y0, y1 = horizon - 0.12 * h, horizon + 0.04 * h
        band = cv.rect(y0, y1, 0, w) & ~road_edge
        bars = band & ((((cv.xx // 2) % 3) == 0) | (np.abs(cv.yy - (y0 + 2)) < 1.5))
        cv.paint(bars, "fence", _PALETTE["fence"], 10)
    if "awning" in obj:
        for _ in range(r.integers(2, 4)):
            x0, aw = r.uniform(0, 0.8) * w, r.uniform(0.12, 0.22) * w
            m = cv.rect(horizon - 0.22 * h, horizon - 0.15 * h, x0, x0 + aw)
            cv.paint(m, "awning", _VIVID[r.integers(len(_VIVID))], 5)
            cv.img[m & ((cv.xx // 3) % 2 == 0)] = (245, 245, 245)
    if "signboard" in obj:
        for _ in range(r.integers(2, 6)):
            sw, sh = r.uniform(0.08, 0.16) * w, r.uniform(0.06, 0.12) * h
            x0, y0 = r.uniform(0, 1) * (w - sw), r.uniform(0.55, 0.97) * horizon - sh
            m = cv.rect(y0, y0 + sh, x0, x0 + sw)
            cv.paint(m, "signboard", _VIVID[r.integers(len(_VIVID))], 6)
            text = m & (((cv.yy - int(y0)) % 4) == 2) & (((cv.xx - int(x0)) % 5) > 0)
            cv.img[text] = (20, 20, 20)
    if "plant" in obj:
        for _ in range(r.integers(3, 7)):
            cy, cx = horizon + r.uniform(0.0, 0.06) * h, r.uniform(0, 1) * w
            m = cv.ellipse(cy, cx, r.uniform(0.03, 0.06) * h, r.uniform(0.04, 0.08) * w)
            cv.paint(m & ~road_edge, "plant", _PALETTE["plant"], 10)
            cv.texture(m & ~road_edge, 16)
    if "tree" in obj:
        for _ in range(r.integers(2, 4)):
            cx, base = r.uniform(0.05, 0.95) * w, horizon + r.uniform(0.05, 0.2) * h
            trunk = cv.rect(base - 0.25 * h, base, cx - 1.5, cx + 1.5)
            cv.paint(trunk, "tree", (90, 64, 40), 6)
            crown = cv.ellipse(base - 0.3 * h, cx, 0.12 * h, 0.09 * w)
            cv.paint(crown, "tree", _PALETTE["tree"], 10)
            cv.texture(crown, 18)
    for kind in ("pole", "streetlight", "flag"):
        if kind not in obj:
            continue
        lights = kind == "streetlight"
        for _ in range(r.integers(3, 6) if lights else r.integers(2, 4)):
            x, base = r.uniform(0.05, 0.95) * w, horizon + r.uniform(0.1, 0.3) * h
            top = r.uniform(0.05, 0.3) * h
            half = 0.012 * w + (0.5 if lights else 0.0)
            cv.paint(
                cv.rect(top, base, x - half, x + half + 0.5),
                "pole" if kind == "flag" else kind,
                _PALETTE["pole" if kind == "flag" else kind],
                6,
            )
            if lights:
                arm = cv.rect(top - 1, top + 1.5, x, x + 0.06 * w)
                lamp = cv.ellipse(top + 1.5, x + 0.06 * w, 0.02 * h + 1, 0.03 * w + 1)
                cv.paint(arm | lamp, "streetlight", (240, 236, 200), 4)
            if kind == "flag":
                m = cv.rect(top, top + 0.08 * h, x + 1.5, x + 0.12 * w)
                cv.paint(m, "flag", _VIVID[r.integers(len(_VIVID))], 6)
    if "car" in obj:
        for _ in range(r.integers(1, 4)):
            y = horizon + r.uniform(0.2, 0.45) * h
            cw, ch = r.uniform(0.16, 0.26) * w, r.uniform(0.08, 0.12) * h
            x0 = r.uniform(0.1, 0.9) * w - cw / 2
            body = cv.rect(y - ch, y, x0, x0 + cw) | cv.rect(
                y - 1.6 * ch, y - ch, x0 + cw * 0.2, x0 + cw * 0.8
            )
            cv.paint(body, "car", _VIVID[r.integers(len(_VIVID))], 8)
            cv.img[cv.rect(y - 1.5 * ch, y - 1.05 * ch, x0 + cw * 0.25, x0 + cw * 0.75)] = 40
    if "person" in obj:
        for _ in range(r.integers(2, 5)):
            x, base = r.uniform(0.05, 0.95) * w, horizon + r.uniform(0.1, 0.35) * h
            ph = r.uniform(0.12, 0.2) * h
            body = cv.rect(base - ph * 0.8, base, x - 0.2 * ph, x + 0.2 * ph)
            body |= cv.ellipse(base - ph * 0.9, x, ph * 0.12, ph * 0.12)
            cv.paint(body, "person", _PALETTE["person"], 20)


def render_scene(style: CityStyle, height: int, width: int, rng: np.random.Generator):
    """Render one place of a city.

    Args:
        style: The city's style.
        height: Canvas height in pixels.
        width: Canvas width in pixels.
        rng: Source of randomness (one per place, for determinism).

    Returns:
        ``(image, labels)``: float32 ``(H, W, 3)`` linear RGB in [0, 255] before
        lighting/noise, and uint8 ``(H, W)`` ADE20K class indices.
    """
    cv = _Canvas(height, width, rng)
    horizon = int(height * rng.uniform(0.45, 0.6))
    _sky_and_buildings(cv, style, horizon)
    _street(cv, style, horizon)
    road = cv.lab == CLASS["road"]
    _objects(cv, style, horizon, road)
    return cv.img, cv.lab
