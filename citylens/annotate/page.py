"""The annotation page: one self-contained HTML file, safe by construction.

Each explanation is shown three ways — the image as the model saw it, the visual
explanation at θ (the pixels outside it darkened), and mask_norm over the image — and
the person picks the one or two objects that dominate it from the vocabulary, or
"none / unclear". The page's script (``page.js``) keeps the answers in the browser's
local storage and exports the CSV ``citylens agree`` reads
(:mod:`citylens.analysis.annotations`).

Nothing in the page is loaded from elsewhere: pictures are ``data:`` URLs, the script and
the style are inline and named by their SHA-256 in a Content-Security-Policy that allows
nothing else (no network, no other script, no form target). Every name that comes from a
study (its title, class names, model names) travels in a JSON data block and reaches
the page only as text (``textContent``), never as markup.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
from matplotlib import colormaps
from PIL import Image

from citylens.analysis.annotations import label_tokens
from citylens.masks import explanation, upsample_masks
from citylens.vocabulary import Vocabulary

__all__ = ["PageItem", "build_page", "item_pictures", "page_id"]

_OUTSIDE_ALPHA = 200  # how dark the pixels outside the explanation are drawn (of 255)
_HEAT_ALPHA = 0.5  # the heat map's opacity over the image
_HEAT_SIDE = 64  # the heat map's grid (the browser smooths it up to the image's size)


@dataclass(frozen=True)
class PageItem:
    """One explanation to annotate.

    Attributes:
        image_id: The image's id (the CSV's ``image``).
        model: Whose explanation (exported, not shown).
        theta: Its θ.
        photo: JPEG of the image as the model saw it (square).
        region: PNG (RGBA, the photo's size): transparent inside the explanation at θ,
            dark outside.
        heat: PNG (RGBA): mask_norm in the jet colours, half transparent.
        offered: Classes offered as one-click choices (the segmenter's top classes inside
            the explanation), in name order so their rank does not lead the answer.
    """

    image_id: str
    model: str
    theta: float
    photo: bytes
    region: bytes
    heat: bytes
    offered: tuple[int, ...] = ()


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def item_pictures(
    image: np.ndarray, mask: np.ndarray, theta: float, quality: int = 85
) -> tuple[bytes, bytes, bytes]:
    """The three pictures of one explanation.

    Args:
        image: ``(S, S, 3)`` uint8, the image resized as the model sees it.
        mask: ``(h, w)`` mask_norm at the target layer's resolution.
        theta: Threshold θ of the visual explanation.
        quality: JPEG quality of the photo.

    Returns:
        ``(photo JPEG, region PNG, heat PNG)``: the region is the visual explanation at θ
        on the ``(S, S)`` grid exactly as :func:`citylens.masks.explanation` draws it.
    """
    side = image.shape[0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    inside = explanation(mask, (side, image.shape[1]), theta).numpy()
    region = np.zeros((*inside.shape, 2), np.uint8)
    region[..., 1] = np.where(inside, 0, _OUTSIDE_ALPHA)
    heat_grid = upsample_masks(np.asarray(mask, np.float32), (_HEAT_SIDE, _HEAT_SIDE)).numpy()
    heat = (colormaps["jet"](heat_grid) * 255).astype(np.uint8)
    heat[..., 3] = round(255 * _HEAT_ALPHA)
    return buf.getvalue(), _png(region, "LA"), _png(heat, "RGBA")


def page_id(items: list[PageItem], title: str) -> str:
    """A short digest of the page's content: the key of its answers in the browser.

    Of the title, each explanation's (image, model, θ) and its pictures: a page made
    again after the explanations changed starts with no answers, never with answers
    given to other pictures.
    """
    h = hashlib.sha256(title.encode())
    for it in items:
        h.update(f"\x00{it.image_id}\x00{it.model}\x00{it.theta:.4f}\x00".encode())
        for data in (it.photo, it.region, it.heat):
            h.update(hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _json_block(data: dict) -> str:
    """JSON that cannot end its ``<script>`` element or open markup inside it."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("citylens.annotate").joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def build_page(
    items: list[PageItem], vocabulary: Vocabulary, title: str, instructions: str = ""
) -> str:
    """The whole page.

    Args:
        items: The explanations, in the order the person sees them.
        vocabulary: Classes the person picks from (index 0, ``other``, is not offered).
        title: The page's title (escaped).
        instructions: One more line of guidance under the title (plain text).

    Returns:
        One HTML document that loads nothing.
    """
    synonyms = vocabulary.synonyms or ((),) * len(vocabulary)
    tokens = label_tokens(vocabulary)
    data = {
        "id": page_id(items, title),
        "title": title,
        # a name two classes share is shown with its index, and exported as the index
        "names": [
            n if t == n else f"{n} #{k}" for k, (n, t) in enumerate(zip(vocabulary.names, tokens))
        ],
        "tokens": tokens,
        "synonyms": [list(s) for s in synonyms],
        "items": [
            {
                "image": it.image_id,
                "model": it.model,
                "theta": round(float(it.theta), 4),
                "photo": _data_url("image/jpeg", it.photo),
                "region": _data_url("image/png", it.region),
                "heat": _data_url("image/png", it.heat),
                "offered": [int(c) for c in it.offered],
            }
            for it in items
        ],
    }
    script, style = _asset("page.js"), _asset("page.css")
    csp = (
        "default-src 'none'; img-src data:; "
        f"style-src '{_sha256(style)}'; script-src '{_sha256(script)}'; "
        "base-uri 'none'; form-action 'none'"
    )
    body = _asset("page.html").format(
        title=html.escape(title), instructions=html.escape(instructions), n=len(items)
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n"
        f"<body>\n{body}\n"
        f'<script type="application/json" id="citylens-data">{_json_block(data)}</script>\n'
        f"<script>{script}</script>\n</body></html>\n"
    )
