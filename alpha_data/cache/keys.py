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
* A ``Personal`` value (an email, a username: what identifies a person) is
  never readable in a key or tag: it becomes ``#p`` + a keyed BLAKE2b digest
  of the value (already normalised the way its lookup compares, e.g. emails
  lower-cased), so Redis key names, SCAN/MONITOR output and slow logs hold
  no personal data while equal values still meet on one key.
"""

from __future__ import annotations

import enum
import hashlib
from decimal import Decimal
from urllib.parse import quote

from alpha_data.money import MONEY

__all__ = ["MAX_PART", "Personal", "Unkeyable", "part", "personal"]

#: Longest readable part; longer ones are replaced by a digest.
MAX_PART = 200

_BIG = 10**100
_SAFE = "-_.@+!$&*()=,;/'"


#: Key of the digest of personal values (domain separation from every other digest).
_PERSONAL_KEY = b"alpha_data/personal-key-part/v1"


class Unkeyable(TypeError):
    """A value that may not be part of a cache key (the cache is bypassed)."""


class Personal(str):
    """A str that identifies a person: its key part is a keyed digest, never the text."""

    __slots__ = ()


def personal(value: object) -> Personal:
    """Mark ``value`` (a str, normalised by the caller) as personal; Unkeyable otherwise."""
    if not isinstance(value, str):
        raise Unkeyable("a personal key part must be a str")
    return Personal(value)


def _personal_part(value: str) -> str:
    try:
        data = value.encode()
    except UnicodeEncodeError:
        raise Unkeyable("str is not valid UTF-8") from None
    digest = hashlib.blake2b(data, digest_size=16, key=_PERSONAL_KEY, person=b"alpha_pii")
    return "#p" + digest.hexdigest()  # plain strings starting with '#' get a quote: no clash


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
    elif isinstance(value, Personal):
        return _personal_part(value)
    elif isinstance(value, str):
        text = _text(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise Unkeyable("non-finite Decimal is not a key type")
        text = "d" + str(value.normalize(context=MONEY))  # not the caller's precision
    else:
        raise Unkeyable(f"{type(value).__name__} is not a key type")
    if len(text) > MAX_PART:
        digest = hashlib.blake2b(text.encode(), digest_size=16, person=b"alpha_key").hexdigest()
        return "#" + digest
    return text
