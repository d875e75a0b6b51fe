"""A self-contained HTML page: figures inlined as base64 PNG, tables as HTML."""

from __future__ import annotations

import base64
import html
import io

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["Page", "jpeg_bytes", "png_array_bytes", "png_bytes"]

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
.note { color: #555; font-size: 0.92em; } .summary { background: #f8f8f8; padding: 0.8em 1.2em; }
"""


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes (and close it)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def jpeg_bytes(array, quality: int = 88) -> bytes:
    """Encode a uint8 ``(H, W, 3)`` picture (mosaics, galleries) as JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_array_bytes(array) -> bytes:
    """Encode a uint8 ``(H, W, 3)`` picture as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class Page:
    """Builds the report body section by section."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def h2(self, text: str, anchor: str) -> None:
        """A section heading with an anchor."""
        self.parts.append(f'<h2 id="{anchor}">{html.escape(text)}</h2>')

    def p(self, text: str, cls: str = "") -> None:
        """A paragraph of markup (escape what comes from a study before passing it)."""
        attr = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{attr}>{text}</p>")

    def raw(self, markup: str) -> None:
        """Markup as it is."""
        self.parts.append(markup)

    def image(self, data: bytes, alt: str, mime: str = "image/png") -> None:
        """An image embedded as base64 (the page loads nothing)."""
        b64 = base64.b64encode(data).decode()
        self.parts.append(f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{b64}">')

    def table(self, df: pd.DataFrame, floatfmt: str = "{:.3f}", summary: str | None = None) -> None:
        """An HTML table; folded under ``summary`` (a <details> element) when given."""
        fmt = {c: floatfmt.format for c in df.columns if df[c].dtype.kind == "f"}
        markup = df.to_html(index=False, formatters=fmt, border=0, na_rep="–")
        if summary:
            markup = f"<details><summary>{html.escape(summary)}</summary>{markup}</details>"
        self.parts.append(markup)

    def render(self) -> str:
        """The whole page: one self-contained HTML document."""
        body = "\n".join(self.parts)
        return (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>"
            f"<body>\n<h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )
