"""Keyset pagination: ``Page`` and opaque, tamper-evident cursors."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

import orjson

from alpha_data.errors import InvalidDataError

__all__ = ["Page", "decode_cursor", "encode_cursor"]

T = TypeVar("T")

_CURSOR_VERSION = 1
_DIGEST_BYTES = 8
_MAX_CURSOR = 512


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset-paginated list; pass ``next_cursor`` as ``after``.

    ``for item in page`` iterates ``items`` (typed ``T``); ``len(page)`` counts them.
    """

    items: list[T]
    next_cursor: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_DIGEST_BYTES, person=b"alpha_cursor").digest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        if "t" in value and isinstance(value["t"], str):
            parsed = datetime.fromisoformat(value["t"])
            if parsed.tzinfo is None:
                raise ValueError("naive time in cursor")
            return parsed
        if "d" in value and isinstance(value["d"], str):
            return Decimal(value["d"])
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return value
    raise ValueError("unsupported cursor value")


def encode_cursor(order_by: str, key: tuple[Any, int]) -> str:
    """An opaque URL-safe cursor for the row after ``key`` in ``order_by`` order."""
    payload = orjson.dumps([_CURSOR_VERSION, order_by, _jsonable(key[0]), key[1]])
    raw = _digest(payload) + payload
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, order_by: str) -> tuple[Any, int]:
    """The key a cursor points after; InvalidDataError if it was altered or is foreign."""
    bad = InvalidDataError("invalid pagination cursor")
    if not isinstance(cursor, str) or not cursor or len(cursor) > _MAX_CURSOR:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        digest, payload = raw[:_DIGEST_BYTES], raw[_DIGEST_BYTES:]
        if _digest(payload) != digest:
            raise bad
        version, name, value, row_id = orjson.loads(payload)
        if version != _CURSOR_VERSION or not isinstance(row_id, int) or isinstance(row_id, bool):
            raise bad
        if name != order_by:
            raise InvalidDataError(
                f"cursor was made for order_by={name!r}, not order_by={order_by!r}"
            )
        return _from_jsonable(value), row_id
    except InvalidDataError:
        raise
    except (ValueError, TypeError, binascii.Error, InvalidOperation, orjson.JSONDecodeError):
        raise bad from None
