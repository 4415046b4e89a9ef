"""Readable, collision-free key parts built only from typed values.

A part is what goes between two ``:`` of a key or tag. Only ``int``, ``str``,
``Decimal``, ``None`` and enums of those are accepted (``bool`` and anything
else raise ``Unkeyable``): a key is never built from ``repr`` of an object.

* ``int`` → its decimal digits (``42``), ``Decimal`` → ``d`` + its normalized
  form (``d1.5``), ``None`` → ``~``, an enum → the part of its value.
* ``str`` → percent-escaped so that ``:``, ``%``, ``~``, spaces and control
  characters cannot be confused with structure (``ana``, ``a%3Ab``); a
  string that would read as a number or ``d…`` gets a ``'`` in front.
* Parts longer than ``MAX_PART`` become ``#`` + a BLAKE2b digest.
"""

from __future__ import annotations

import enum
import hashlib
from decimal import Decimal
from urllib.parse import quote

__all__ = ["MAX_PART", "Unkeyable", "part"]

#: Longest readable part; longer ones are replaced by a digest.
MAX_PART = 200

_BIG = 10**100
_SAFE = "-_.@+!$&*()=,;/'"


class Unkeyable(TypeError):
    """A value that may not be part of a cache key (the cache is bypassed)."""


def _text(value: str) -> str:
    try:
        escaped = quote(value, safe=_SAFE).replace("~", "%7E")
    except UnicodeEncodeError:  # lone surrogates: not text PostgreSQL could hold either
        raise Unkeyable("str is not valid UTF-8") from None
    first = escaped[:1]
    if first.isdigit() or first in ("-", "d", "'", "#"):
        return "'" + escaped
    return escaped


def part(value: object) -> str:
    """The key part of ``value``; raises Unkeyable for unsupported types."""
    if type(value) is int and -_BIG < value < _BIG:  # the common case first
        return str(value)
    if value is None:
        text = "~"
    elif isinstance(value, enum.Enum):
        return part(value.value)
    elif isinstance(value, bool):
        raise Unkeyable("bool is not a key type (it would read as an int)")
    elif isinstance(value, int):
        if not -_BIG < value < _BIG:
            raise Unkeyable("int too large for a key")
        text = str(value)
    elif isinstance(value, str):
        text = _text(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise Unkeyable("non-finite Decimal is not a key type")
        text = "d" + str(value.normalize())
    else:
        raise Unkeyable(f"{type(value).__name__} is not a key type")
    if len(text) > MAX_PART:
        digest = hashlib.blake2b(text.encode(), digest_size=16, person=b"alpha_key").hexdigest()
        return "#" + digest
    return text
