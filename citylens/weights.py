"""Loading tensors from files without running code from them.

Every checkpoint, training state and weights file citylens reads goes through
:func:`load_tensors`: ``torch.load(weights_only=True)``, which refuses a pickle that
names Python callables. Such a refusal becomes an :class:`~citylens.errors.UnsafeFileError`
that names the file and the object it would have had to run; it never suggests
turning the check off.
"""

from __future__ import annotations

import io
import pickle
import re
from typing import Any

import torch

from citylens.errors import InputError, UnsafeFileError

__all__ = ["load_tensors"]

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_tensors(source: bytes | str, name: str, map_location: Any = "cpu") -> Any:
    """``torch.load(source, weights_only=True)``, with refusals explained.

    Args:
        source: The file's bytes, or a local path.
        name: What to call the file in messages (its URI).
        map_location: As for :func:`torch.load`.

    Returns:
        What the file holds (tensors, dicts, lists, numbers).

    Raises:
        UnsafeFileError: the file holds Python objects other than tensors and
            containers (a whole pickled model, a custom class).
        InputError: the file is not a PyTorch file at all (truncated, another format).
    """
    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        what = _GLOBAL.search(str(err))
        obj = f" (it names {what.group(1)})" if what else ""
        raise UnsafeFileError(
            f"{name}: not a plain state_dict: the file holds Python objects{obj} that "
            "loading would have to run, so citylens refused it for safety. Save plain "
            "tensors instead, e.g. torch.save(model.state_dict(), path)."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise InputError(
            f"{name}: not a PyTorch weights file ({type(err).__name__}: {str(err)[:200]})"
        ) from None
