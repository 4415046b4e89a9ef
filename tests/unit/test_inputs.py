"""Input checks without servers: validation, metric checks, check_id, cursors, tags."""

from __future__ import annotations

import base64
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from alpha_data.cache.tags import TagSpec, as_spec
from alpha_data.errors import InvalidDataError
from alpha_data.repositories.base import check_id
from alpha_data.repositories.metrics.checks import (
    RememberedChecks,
    check_labels,
    check_limit,
    check_name,
    check_span,
    check_value,
)
from alpha_data.repositories.pagination import decode_cursor, encode_cursor
from alpha_data.validation import check_aware, check_finite, check_money, check_symbol, check_text

UTC = timezone.utc


# -- money, symbols, text, times, numbers -------------------------------------------


@pytest.mark.parametrize(
    ("value", "positive", "expected"),
    [
        ("1.5", True, Decimal("1.5")),
        (7, False, Decimal(7)),
        (Decimal("9999999999.99999999"), True, Decimal("9999999999.99999999")),
        (Decimal("0"), False, Decimal("0")),
    ],
)
def test_check_money_accepts_exact_values(value: Any, positive: bool, expected: Decimal) -> None:
    assert check_money(value, "price", positive=positive) == expected


@pytest.mark.parametrize(
    ("value", "positive", "message"),
    [
        (1.5, False, "must be a Decimal"),
        (True, False, "must be a Decimal"),
        ("abc", False, "is not a number"),
        (Decimal("NaN"), False, "finite"),
        (Decimal("10000000000"), False, "exceeds"),
        (Decimal("0.000000001"), False, "more than 8 decimal places"),
        (Decimal("0"), True, "greater than 0"),
        (Decimal("-1"), False, "must not be negative"),
    ],
)
def test_check_money_rejects(value: Any, positive: bool, message: str) -> None:
    with pytest.raises(InvalidDataError, match=message):
        check_money(value, "price", positive=positive)


@pytest.mark.parametrize("value", ["", "A B", "X" * 33, "A\x00", 5])
def test_check_symbol_rejects(value: Any) -> None:
    with pytest.raises(InvalidDataError):
        check_symbol(value)


def test_check_text_and_times_and_numbers() -> None:
    assert check_text("ok", "name", max_length=2) == "ok"
    for bad in (None, " ", "abc", "a\x00", "\ud800"):
        with pytest.raises(InvalidDataError):
            check_text(bad, "name", max_length=2)
    aware = datetime(2026, 1, 1, tzinfo=UTC)
    assert check_aware(aware, "t") is aware
    with pytest.raises(InvalidDataError, match="timezone-aware"):
        check_aware(datetime(2026, 1, 1), "t")
    assert check_finite(Decimal("1.25"), "v") == 1.25
    for bad_number in (math.nan, math.inf, True, "1", 10**400):
        with pytest.raises(InvalidDataError):
            check_finite(bad_number, "v")


@pytest.mark.parametrize("value", [0, -1, 2**63, True, "1", 1.0, None])
def test_check_id_rejects(value: Any) -> None:
    with pytest.raises(InvalidDataError):
        check_id(value)


# -- metric checks --------------------------------------------------------------------


def test_metric_checks() -> None:
    assert check_name("cpu.load") == "cpu.load"
    for bad in ("", " ", "x" * 201, "a\nb", 3):
        with pytest.raises(InvalidDataError):
            check_name(bad)
    assert check_labels(None) == {} and check_labels({"a": "b"}) == {"a": "b"}
    for bad_labels in ([("a", "b")], {"a": 1}, {"": "x"}, {"a": "x" * 501}, {"a": "\x00"}):
        with pytest.raises(InvalidDataError):
            check_labels(bad_labels)
    with pytest.raises(InvalidDataError, match="at most 32"):
        check_labels({str(i): "v" for i in range(33)})
    assert check_value(2) == 2.0
    with pytest.raises(InvalidDataError):
        check_value(float("nan"))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert check_span(start, start) == (start, start)
    with pytest.raises(InvalidDataError, match="after end"):
        check_span(start + timedelta(1), start)
    for bad_limit in (0, 100_001, True, 1.0):
        with pytest.raises(InvalidDataError):
            check_limit(bad_limit)


def test_remembered_checks_skip_work_but_not_rules() -> None:
    checks = RememberedChecks()
    assert checks.name("m") == "m" and "m" in checks.names
    assert checks.labels_json({"b": "2", "a": "1"}) == '{"b":"2","a":"1"}'
    assert checks.labels_json({"b": "2", "a": "1"}) is checks.labels[(("b", "2"), ("a", "1"))]
    assert checks.labels_json(None) == "{}" and checks.labels_json({}) == "{}"
    with pytest.raises(InvalidDataError):
        checks.labels_json({"a": ["not", "flat"]})
    with pytest.raises(InvalidDataError):
        checks.name("\x00")


# -- keyset cursors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [42, "ana", datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), Decimal("12.50000000")],
)
def test_cursor_round_trip(value: Any) -> None:
    cursor = encode_cursor("created_at", (value, 7))
    assert decode_cursor(cursor, "created_at") == (value, 7)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor


def test_altered_or_foreign_cursors_are_rejected() -> None:
    cursor = encode_cursor("id", (5, 5))
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[-2] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad in (tampered, "", "!!!", "x" * 2000, 5):
        with pytest.raises(InvalidDataError, match="invalid pagination cursor"):
            decode_cursor(bad, "id")  # type: ignore[arg-type]
    with pytest.raises(InvalidDataError, match="order_by='id'"):
        decode_cursor(encode_cursor("name", ("a", 1)), "id")


# -- tags -----------------------------------------------------------------------------


def test_tags() -> None:
    spec = TagSpec("users", "email", normalize=str.lower)
    assert spec.tag("Ana@X.io") == spec.tag("ana@x.io")
    assert as_spec("alerts:open").tag() == "alerts:open"
    assert TagSpec("portfolios", "id").of("portfolio_id").attribute == "portfolio_id"
    with pytest.raises(ValueError, match="namespace:name"):
        as_spec("no-colon")
