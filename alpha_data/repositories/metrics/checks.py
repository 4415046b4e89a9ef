"""Input checks of metric calls (InvalidDataError before any SQL), on top of validation.py.

Metric names, label mappings, values and spans; the generic text, time and
number rules come from :mod:`alpha_data.validation`, this module adds what is
particular to metrics (printable names, flat ``str → str`` labels within the
limits of :mod:`.schema`, JSON encoding of labels for COPY).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from alpha_data.errors import InvalidDataError
from alpha_data.repositories.metrics.schema import (
    MAX_LABEL_KEY_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
    MAX_LABELS,
    MAX_NAME_LENGTH,
    MAX_RANGE_LIMIT,
)
from alpha_data.validation import check_aware, check_finite, check_text

__all__ = [
    "EMPTY_LABELS",
    "check_label_key",
    "check_labels",
    "check_limit",
    "check_name",
    "check_span",
    "check_value",
    "encode_labels",
]

#: The JSON text of "no labels".
EMPTY_LABELS = "{}"


def check_name(name: Any, what: str = "metric name") -> str:
    """A non-blank, printable name of at most MAX_NAME_LENGTH characters."""
    checked = check_text(name, what, max_length=MAX_NAME_LENGTH)
    if not checked.isprintable():
        raise InvalidDataError(f"{what} must not contain control characters")
    return checked


def check_label_key(key: Any) -> str:
    """A label key to look up (``latest_per_label``)."""
    checked = check_name(key, "label key")
    if len(checked) > MAX_LABEL_KEY_LENGTH:
        raise InvalidDataError(f"label key must be at most {MAX_LABEL_KEY_LENGTH} characters")
    return checked


def check_labels(labels: Any, what: str = "labels") -> dict[str, str]:
    """A flat str → str mapping (copied into a plain dict)."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise InvalidDataError(f"{what} must be a mapping of str to str")
    if len(labels) > MAX_LABELS:
        raise InvalidDataError(f"{what} may hold at most {MAX_LABELS} entries")
    out: dict[str, str] = {}
    for key, value in labels.items():
        _check_label(key, value, what)
        out[key] = value
    return out


def _check_label(key: Any, value: Any, what: str) -> None:
    if not isinstance(key, str) or not isinstance(value, str):
        raise InvalidDataError(f"{what} must map str to str (flat, no nesting)")
    if not key or len(key) > MAX_LABEL_KEY_LENGTH:
        raise InvalidDataError(f"{what} keys must be 1 to {MAX_LABEL_KEY_LENGTH} characters long")
    if len(value) > MAX_LABEL_VALUE_LENGTH:
        raise InvalidDataError(
            f"{what} values must be at most {MAX_LABEL_VALUE_LENGTH} characters long"
        )
    if "\x00" in key or "\x00" in value:
        raise InvalidDataError(f"{what} must not contain NUL characters")


def encode_labels(labels: dict[str, str], what: str = "labels") -> str:
    """Checked labels as JSON text (refusing text PostgreSQL cannot store)."""
    if not labels:
        return EMPTY_LABELS
    try:
        return orjson.dumps(labels).decode()
    except orjson.JSONEncodeError:
        raise InvalidDataError(f"{what} are not valid UTF-8 text") from None


def check_value(value: Any, what: str = "value") -> float:
    """A finite float (a float passes without conversion: the bulk-ingest fast path)."""
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise InvalidDataError(f"{what} must be finite")
    return check_finite(value, what)


def check_span(start: Any, end: Any) -> tuple[datetime, datetime]:
    """Aware ``start <= end``."""
    start = check_aware(start, "start")
    end = check_aware(end, "end")
    if start > end:
        raise InvalidDataError("start must not be after end")
    return start, end


def check_limit(limit: Any) -> int:
    """An int between 1 and MAX_RANGE_LIMIT."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RANGE_LIMIT:
        raise InvalidDataError(f"limit must be an integer between 1 and {MAX_RANGE_LIMIT}")
    return limit


class RememberedChecks:
    """The checks of one unit of work, remembering names and label sets already accepted.

    Bulk ingest repeats a few names and label sets millions of times; a name
    or label tuple seen before skips its checks (bounded memory).
    """

    MAX_REMEMBERED = 10_000

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.labels: dict[tuple[tuple[str, str], ...], str] = {}

    def name(self, name: Any) -> str:
        """A checked metric name."""
        if name.__class__ is str and name in self.names:
            return str(name)
        checked = check_name(name)
        if len(self.names) < self.MAX_REMEMBERED:
            self.names.add(checked)
        return checked

    def labels_json(self, labels: Any) -> str:
        """Checked labels as JSON text (a label set seen before costs one dict lookup)."""
        if labels is None or (labels.__class__ is dict and not labels):
            return EMPTY_LABELS
        try:
            known = self.labels.get(tuple(labels.items()))
        except (AttributeError, TypeError):  # not a mapping, or unhashable values
            known = None
        if known is not None:
            return known
        checked = check_labels(labels)
        encoded = encode_labels(checked)
        if len(self.labels) < self.MAX_REMEMBERED:
            self.labels[tuple(checked.items())] = encoded
        return encoded
