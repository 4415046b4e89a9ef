"""Checks applied to input before it reaches SQL; each raises InvalidDataError."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from alpha_data.errors import InvalidDataError
from alpha_data.money import MONEY

__all__ = ["check_aware", "check_finite", "check_money", "check_symbol", "check_text"]

#: Numeric(18, 8): at most 10 digits before the point and 8 after.
_MONEY_MAX = Decimal("9999999999.99999999")
_MONEY_EXP = Decimal("0.00000001")
# asyncpg writes exactly datetime.min/max as -infinity/infinity (read back naive).
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc) + timedelta(microseconds=1)
_LATEST = datetime.max.replace(tzinfo=timezone.utc) - timedelta(microseconds=1)


def check_money(value: Any, what: str, *, positive: bool = False) -> Decimal:
    """An exact Decimal that fits Numeric(18, 8) without rounding."""
    if isinstance(value, (bool, float)):
        raise InvalidDataError(f"{what} must be a Decimal (or int/str), not {type(value).__name__}")
    try:
        amount = Decimal(value) if isinstance(value, (int, str)) else value
    except (InvalidOperation, ValueError):
        raise InvalidDataError(f"{what} is not a number") from None
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidDataError(f"{what} must be a finite Decimal")
    # Comparisons are exact; abs() and quantize() round to a context: the layer's.
    if MONEY.abs(amount) > _MONEY_MAX:
        raise InvalidDataError(f"{what} exceeds {_MONEY_MAX}")
    if amount != amount.quantize(_MONEY_EXP, context=MONEY):
        raise InvalidDataError(f"{what} has more than 8 decimal places")
    if positive and amount <= 0:
        raise InvalidDataError(f"{what} must be greater than 0")
    if not positive and amount < 0:
        raise InvalidDataError(f"{what} must not be negative")
    return amount


def check_symbol(value: Any) -> str:
    """A ticker symbol: 1 to 32 printable, non-space characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= 32:
        raise InvalidDataError("symbol must be a string of 1 to 32 characters")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidDataError("symbol must not contain spaces or control characters")
    return value


def check_text(value: Any, what: str, *, max_length: int, allow_empty: bool = False) -> str:
    """A string without NUL bytes, within ``max_length`` characters."""
    if not isinstance(value, str):
        raise InvalidDataError(f"{what} must be a string")
    if not allow_empty and not value.strip():
        raise InvalidDataError(f"{what} must not be empty")
    if len(value) > max_length:
        raise InvalidDataError(f"{what} must be at most {max_length} characters")
    if "\x00" in value:
        raise InvalidDataError(f"{what} must not contain NUL bytes")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidDataError(f"{what} is not valid UTF-8 text") from None
    return value


def check_aware(value: Any, what: str) -> datetime:
    """A timezone-aware datetime (naive times are rejected, not guessed)."""
    if not isinstance(value, datetime):
        raise InvalidDataError(f"{what} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidDataError(f"{what} must be timezone-aware")
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidDataError(f"{what} is out of range") from None
    if not _EARLIEST <= utc <= _LATEST:
        raise InvalidDataError(f"{what} must be between year 1 and year 9999")
    return value


def check_finite(value: Any, what: str) -> float:
    """A finite float (NaN and ±inf rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise InvalidDataError(f"{what} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidDataError(f"{what} is too large for a double") from None
    if not math.isfinite(number):
        raise InvalidDataError(f"{what} must be finite")
    return number
