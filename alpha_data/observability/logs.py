"""Logger names per layer and helpers for structured ``extra`` fields.

alpha_data logs through the standard :mod:`logging` module and configures no
handler: the application decides where records go. Every record the library
emits carries its data as ``extra`` fields (attributes of the LogRecord) so a
structured formatter can ship them as JSON; :class:`JsonFormatter` is one.

Loggers (``alpha_data.<layer>``):

========================  =====================================================
``alpha_data.database``   start-up, transaction retries and give-ups
``alpha_data.uow``        one DEBUG line per unit of work; failed callbacks
``alpha_data.sql``        statements slower than ``slow_query_ms`` (WARNING)
``alpha_data.pool``       connection-pool timeouts (WARNING, throttled)
``alpha_data.cache``      cache outages (throttled) and recoveries
``alpha_data.events``     event-bus outages (throttled) and dropped events
``alpha_data.services.*`` use-case notes (password rehash, key touch failures)
``alpha_data.metrics``    time-series partitions and COPY
``alpha_data.integrations.*``  web-framework error mapping
========================  =====================================================
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = [
    "ENGINE_LOGGER",
    "HIDE_RESULT_ROWS",
    "LOGGERS",
    "HideResultRows",
    "JsonFormatter",
    "Throttle",
    "record_fields",
]

#: Logger name of each layer.
LOGGERS: dict[str, str] = {
    "database": "alpha_data.database",
    "uow": "alpha_data.uow",
    "sql": "alpha_data.sql",
    "pool": "alpha_data.pool",
    "cache": "alpha_data.cache",
    "events": "alpha_data.events",
    "services": "alpha_data.services",
    "metrics": "alpha_data.metrics",
    "integrations": "alpha_data.integrations",
}

#: Attributes every LogRecord has; an ``extra`` field may not reuse them.
RESERVED: frozenset[str] = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of ``record`` (everything that is not a standard attribute)."""
    return {k: v for k, v in vars(record).items() if k not in RESERVED}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the extra fields.

    Not installed by alpha_data; an application may use it, e.g.
    ``handler.setFormatter(JsonFormatter())``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single JSON line."""
        out: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(record_fields(record))
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class HideResultRows(logging.Filter):
    """Blanks the result rows SQLAlchemy logs at DEBUG (``Row (...)``): they may hold secrets.

    Attached by alpha_data to its own engine's logger only
    (``sqlalchemy.engine.Engine.alpha_data``); SQL text and timings still pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace a result-row record's data; let everything else through unchanged."""
        if record.msg == "Row %r":
            record.msg = "Row (hidden by alpha_data: result rows may hold secrets)"
            record.args = ()
        return True


#: The one instance attached to engine loggers (``addFilter`` ignores repeats).
HIDE_RESULT_ROWS = HideResultRows()

#: ``logging_name`` of alpha_data's engines: SQLAlchemy logs them on this logger.
ENGINE_LOGGER = "sqlalchemy.engine.Engine.alpha_data"


class Throttle:
    """Lets an event through at most once per ``interval`` seconds; counts what it held back."""

    __slots__ = ("_last", "interval", "suppressed")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.suppressed = 0
        self._last = float("-inf")

    def allow(self) -> bool:
        """True when the interval has passed since the last allowed event."""
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """How many events were held back since the last call (and reset the count)."""
        count, self.suppressed = self.suppressed, 0
        return count
