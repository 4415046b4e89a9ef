"""Observability of the data layer: structured logs, ``db.stats()`` counters, engine hooks.

* :mod:`~alpha_data.observability.logs`: logger names per layer, structured
  ``extra`` fields, an optional JSON formatter.
* :mod:`~alpha_data.observability.stats`: the typed :class:`Stats` snapshot
  returned by ``db.stats()`` and the :class:`Counters` a Database owns.
* :mod:`~alpha_data.observability.sqlhooks`: statement counting, the
  slow-query log, pool waits and timeouts.

Optional exporters live in ``alpha_data.integrations.prometheus`` and
``alpha_data.integrations.otel``. See docs/operations.md.
"""

from __future__ import annotations

from typing import Any, Protocol

from alpha_data.observability.logs import LOGGERS, JsonFormatter
from alpha_data.observability.sqlhooks import installed_hooks
from alpha_data.observability.stats import (
    Counters,
    EventStats,
    PoolStats,
    StatementStats,
    Stats,
    UowStats,
    UowTracer,
)

__all__ = [
    "LOGGERS",
    "Counters",
    "EventStats",
    "JsonFormatter",
    "PoolStats",
    "StatementStats",
    "Stats",
    "UowStats",
    "UowTracer",
    "set_metrics_enabled",
]


class _Observed(Protocol):
    @property
    def engine(self) -> Any: ...

    @property
    def counters(self) -> Counters: ...


def set_metrics_enabled(db: _Observed, enabled: bool) -> None:
    """Turn the statement/pool hooks and unit-of-work counting of ``db`` on or off.

    On by default. Off removes the engine listeners (so the slow-query log
    stops too) and freezes the counts ``db.stats()`` reports; pool sizes
    stay live. Tracing (integrations.otel) is independent of this switch.
    """
    db.counters.set_enabled(enabled)
    router = getattr(db, "router", None)  # read replicas' engines count into the same counters
    engines = [db.engine, *(r.engine for r in getattr(router, "replicas", ()))]
    for engine in engines:
        hooks = installed_hooks(engine)
        if hooks is not None:
            if enabled:
                hooks.install(engine)
            else:
                hooks.remove(engine)
