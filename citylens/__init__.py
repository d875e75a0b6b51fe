"""citylens: what makes one city look different from another, through the eyes of a CNN."""

__version__ = "0.1.0"
