"""Class vocabularies: ordered class names and colours for label maps.

Index 0 is always ``other`` (unlabelled); class ``k`` of a 150-class ADE20K map is
index ``k``. The CSAIL segmentation models output channel ``k - 1`` for class ``k``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

__all__ = ["Vocabulary", "ade20k"]


@dataclass(frozen=True)
class Vocabulary:
    """An ordered set of classes.

    Attributes:
        name: Short identifier, e.g. ``"ade20k"``.
        names: ``names[k]`` is the short name of class index ``k``; ``names[0]`` is
            ``"other"``.
        colors: ``(K, 3)`` uint8 palette, ``colors[k]`` for class ``k``.
        synonyms: ``synonyms[k]`` are the other names of class ``k`` (ADE20K's
            ``building;edifice``), for searching by any of them; empty when the class
            file has none. Not part of :meth:`to_csv` (a study's vocabulary file keeps
            its format).
    """

    name: str
    names: tuple[str, ...]
    colors: np.ndarray
    synonyms: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.names) < 2 or self.names[0] != "other":
            raise ValueError(f"vocabulary {self.name!r}: names[0] must be 'other'")
        if self.colors.shape != (len(self.names), 3):
            raise ValueError(
                f"vocabulary {self.name!r}: {len(self.names)} names but colors has "
                f"shape {self.colors.shape}"
            )
        if self.synonyms and len(self.synonyms) != len(self.names):
            raise ValueError(
                f"vocabulary {self.name!r}: {len(self.names)} names but "
                f"{len(self.synonyms)} synonym lists"
            )

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Index of a class by its short name (``"signboard"``), or raise KeyError."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"class {name!r} is not in vocabulary {self.name!r}") from None

    @classmethod
    def from_csv(cls, text: str, name: str = "custom") -> Vocabulary:
        """Parse a class file.

        Accepts citylens's own format (``index,name,...,r,g,b``) or ADE20K's
        ``objectInfo150.csv`` (``Idx,...,Name``; colours then come from a fixed
        pseudo-random palette). Indices must be 1..K in order. Other names of a class
        come from a ``synonyms`` column, or from ADE20K's ``Name`` (``a;b;c``).
        """
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows:
            raise ValueError(f"class file {name!r} has no rows")
        keys = {k.lower(): k for k in rows[0]}
        idx_key = keys.get("index") or keys.get("idx")
        name_key = keys.get("name")
        if idx_key is None or name_key is None:
            raise ValueError(
                f"class file {name!r}: needs columns 'index' (or 'Idx') and 'name'; "
                f"got {list(rows[0])}"
            )
        syn_key = keys.get("synonyms")
        names = ["other"]
        synonyms: list[tuple[str, ...]] = [()]
        colors = [(0, 0, 0)]
        rng = np.random.default_rng(0)
        for expected, row in enumerate(rows, start=1):
            if int(row[idx_key]) != expected:
                raise ValueError(
                    f"class file {name!r}: indices must run 1..K in order; row {expected} "
                    f"has index {row[idx_key]}"
                )
            aliases = [a.strip() for a in row[name_key].split(";") if a.strip()]
            if syn_key:
                aliases += [a.strip() for a in (row[syn_key] or "").split(";") if a.strip()]
            names.append(aliases[0] if aliases else "")
            synonyms.append(tuple(dict.fromkeys(a for a in aliases[1:] if a != aliases[0])))
            if all(c in keys for c in ("r", "g", "b")):
                colors.append(tuple(int(row[keys[c]]) for c in ("r", "g", "b")))
            else:
                colors.append(tuple(int(v) for v in rng.integers(0, 256, 3)))
        return cls(
            name=name,
            names=tuple(names),
            colors=np.asarray(colors, dtype=np.uint8),
            synonyms=tuple(synonyms) if any(synonyms) else (),
        )

    def to_csv(self) -> str:
        """Serialise in citylens's class-file format (round-trips with from_csv)."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["index", "name", "r", "g", "b"])
        for k in range(1, len(self.names)):
            w.writerow([k, self.names[k], *(int(c) for c in self.colors[k])])
        return out.getvalue()


@cache
def ade20k() -> Vocabulary:
    """The 150 ADE20K scene-parsing classes (plus ``other`` at 0), with CSAIL's palette."""
    text = resources.files("citylens").joinpath("ade20k150.csv").read_text()
    return Vocabulary.from_csv(text, name="ade20k")
