"""Errors a user can act on, and how to find them behind Ray's wrappers.

A :class:`InputError` is something wrong with what the study was given — a city with
too few usable images, a weights file that is not a plain state_dict — as opposed to a
bug. The command line prints its message as one line and exits 2, wherever it was
raised: Ray wraps a worker's exception in its own, chained through ``__cause__``, and
:func:`user_error_in` finds it there.
"""

from __future__ import annotations

__all__ = ["InputError", "UnsafeFileError", "user_error_in"]


class InputError(ValueError):
    """An input of the study cannot be used; the message says which and why.

    Attributes:
        message: One line for the user, naming the file, city or field.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self):  # crosses process boundaries (Ray workers) intact
        return (type(self), (self.message,))


class UnsafeFileError(InputError):
    """A weights or checkpoint file holds Python objects, not plain tensors.

    Loading it would run code named in the file, so it is refused.
    """


def user_error_in(err: BaseException | None, kind: type = InputError):
    """The first exception of type ``kind`` in ``err``'s chain, or None.

    The chain is the error itself, its causes and its contexts.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
