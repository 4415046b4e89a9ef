"""Prometheus metrics of a Database: the numbers of ``db.stats()`` (optional extra ``prometheus``).

::

    from prometheus_client import start_http_server
    from alpha_data.integrations.prometheus import register

    register(db)                 # into prometheus_client's default REGISTRY
    start_http_server(9100)      # or serve /metrics from your web app

The collector reads ``db.stats()`` at scrape time (no background work, no
cost between scrapes). Metric names (namespace ``alpha_data``):

* ``alpha_data_pool_size``, ``_pool_checked_out``, ``_pool_overflow``,
  ``_pool_max_overflow`` (gauges); ``_pool_waits_total``,
  ``_pool_timeouts_total``, ``_pool_wait_seconds_total``
* ``alpha_data_uow_total{outcome}`` (committed, rolled_back, read_only,
  failed), ``alpha_data_uow_failed_total{error}``, ``alpha_data_uow_retries_total``
* ``alpha_data_statements_total``, ``alpha_data_slow_statements_total``
* ``alpha_data_cache_<counter>_total`` for every counter of ``CacheStats``
  (hits, misses, errors, invalidations, ...), ``alpha_data_cache_pending_invalidations``
* ``alpha_data_events_published_total``, ``alpha_data_events_failed_total``
* ``alpha_data_outbox_backlog`` (undelivered rows of this prefix, as the relay
  last measured), ``alpha_data_outbox_oldest_age_seconds`` (gauges);
  ``alpha_data_outbox_delivered_total``, ``_outbox_deferred_total``,
  ``_outbox_redelivered_total``

prometheus-client is imported lazily; the rest of alpha_data never needs it.
See docs/operations.md for what each metric means.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alpha_data.database import Database

__all__ = ["DatabaseCollector", "available", "exposition", "register", "unregister"]

_MISSING = (
    "alpha_data.integrations.prometheus needs prometheus-client: "
    "pip install 'alpha_data[prometheus]'"
)


def available() -> bool:
    """True when prometheus-client is installed."""
    return importlib.util.find_spec("prometheus_client") is not None


def _families() -> tuple[Any, Any]:
    try:
        from prometheus_client.core import (  # type: ignore[import-not-found,unused-ignore]
            CounterMetricFamily,
            GaugeMetricFamily,
        )
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(_MISSING) from exc
    return CounterMetricFamily, GaugeMetricFamily


class DatabaseCollector:
    """A prometheus-client collector exposing ``db.stats()``.

    ``source`` is the Database, or a callable returning it (or None while the
    application has not started one: nothing is exposed then). ``labels`` are
    constant labels added to every sample (e.g. ``{"database": "primary"}``
    when one process has several Databases).
    """

    def __init__(
        self,
        source: Database | Callable[[], Database | None],
        *,
        namespace: str = "alpha_data",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._counter, self._gauge = _families()
        self._source = source
        self.namespace = namespace
        self._label_names = list(labels or {})
        self._label_values = [str(v) for v in (labels or {}).values()]

    def _database(self) -> Database | None:
        source = self._source
        return source() if callable(source) else source

    def describe(self) -> list[Any]:
        """Nothing up front: the registry then never scrapes at registration time."""
        return []

    def _metric(
        self, kind: Any, name: str, doc: str, value: float, extra: Mapping[str, str] | None = None
    ) -> Any:
        extra = extra or {}
        family = kind(f"{self.namespace}_{name}", doc, labels=[*self._label_names, *extra.keys()])
        family.add_metric([*self._label_values, *extra.values()], value)
        return family

    def collect(self) -> Iterator[Any]:
        """Read ``db.stats()`` and yield the metric families (called at scrape time)."""
        db = self._database()
        if db is None:
            return
        stats = db.stats()
        counter, gauge = self._counter, self._gauge
        yield from self._pool(stats.pool, counter, gauge)
        yield from self._uows(stats.uows, counter)
        yield from self._statements_cache_events(stats, counter, gauge)
        outbox = stats.outbox
        if outbox is not None:
            yield from self._outbox(outbox, counter, gauge)

    def _pool(self, pool: Any, counter: Any, gauge: Any) -> Iterator[Any]:
        """Pool size, use, overflow and checkout waits."""
        yield self._metric(gauge, "pool_size", "Connections the pool keeps.", pool.size)
        yield self._metric(gauge, "pool_checked_out", "Connections in use now.", pool.checked_out)
        yield self._metric(
            gauge, "pool_overflow", "Connections open beyond pool_size now.", pool.overflow
        )
        yield self._metric(
            gauge,
            "pool_max_overflow",
            "Most connections allowed beyond pool_size.",
            pool.max_overflow,
        )
        yield self._metric(
            counter,
            "pool_waits",
            "Checkouts that found no free connection and waited.",
            pool.waits,
        )
        yield self._metric(
            counter, "pool_timeouts", "Checkouts that gave up after pool_timeout.", pool.timeouts
        )
        yield self._metric(
            counter,
            "pool_wait_seconds",
            "Time spent waiting for a free connection.",
            pool.wait_seconds,
        )

    def _uows(self, uows: Any, counter: Any) -> Iterator[Any]:
        """Units of work by outcome, failures by error class, retries."""
        ns = self.namespace
        outcomes = counter(
            f"{ns}_uow", "Units of work by outcome.", labels=[*self._label_names, "outcome"]
        )
        for outcome, value in (
            ("committed", uows.committed),
            ("rolled_back", uows.rolled_back),
            ("read_only", uows.read_only),
            ("failed", uows.failed),
        ):
            outcomes.add_metric([*self._label_values, outcome], value)
        yield outcomes
        failed = counter(
            f"{ns}_uow_failed",
            "Units of work left by an exception, by error class.",
            labels=[*self._label_names, "error"],
        )
        for error, value in sorted(uows.failed_by_error.items()):
            failed.add_metric([*self._label_values, error], value)
        yield failed
        yield self._metric(
            counter,
            "uow_retries",
            "Transactions re-run by db.run after a transient error.",
            uows.retried,
        )

    def _statements_cache_events(self, stats: Any, counter: Any, gauge: Any) -> Iterator[Any]:
        """Statement counts, every cache counter (pending ones as gauges), event counts."""
        yield self._metric(counter, "statements", "SQL statements sent.", stats.statements.count)
        yield self._metric(
            counter,
            "slow_statements",
            "Statements slower than slow_query_ms.",
            stats.statements.slow,
        )

        for f in fields(stats.cache):
            value = getattr(stats.cache, f.name)
            if f.name.startswith("pending"):
                yield self._metric(gauge, f"cache_{f.name}", f"Cache {f.name}.", value)
            else:
                doc = f"Cache {f.name.replace('_', ' ')} since start."
                yield self._metric(counter, f"cache_{f.name}", doc, value)

        yield self._metric(
            counter, "events_published", "Events published on the bus.", stats.events.published
        )
        yield self._metric(
            counter,
            "events_failed",
            "Events that could not be published.",
            stats.events.failed,
        )

    def _outbox(self, outbox: Any, counter: Any, gauge: Any) -> Iterator[Any]:
        """Backlog and age of the oldest undelivered row; delivered/deferred/relayed counts."""
        yield self._metric(
            gauge, "outbox_backlog", "Undelivered outbox rows of this prefix.", outbox.backlog
        )
        yield self._metric(
            gauge,
            "outbox_oldest_age_seconds",
            "Age of the oldest undelivered outbox row.",
            outbox.oldest_age,
        )
        for name, doc in (
            ("delivered", "Commits whose effects this process delivered right after COMMIT."),
            ("deferred", "Commits whose effects were left to the outbox relays."),
            ("redelivered", "Outbox rows the relay of this Database delivered."),
        ):
            yield self._metric(counter, f"outbox_{name}", doc, getattr(outbox, name))


def register(
    db: Database | Callable[[], Database | None],
    registry: Any = None,
    *,
    namespace: str = "alpha_data",
    labels: Mapping[str, str] | None = None,
) -> DatabaseCollector:
    """Register a :class:`DatabaseCollector` for ``db`` (default: prometheus-client's REGISTRY)."""
    collector = DatabaseCollector(db, namespace=namespace, labels=labels)
    if registry is None:
        from prometheus_client import REGISTRY  # type: ignore[import-not-found,unused-ignore]

        registry = REGISTRY
    registry.register(collector)
    return collector


def unregister(collector: DatabaseCollector, registry: Any = None) -> None:
    """Remove ``collector`` from ``registry`` (default: prometheus-client's REGISTRY)."""
    if registry is None:
        from prometheus_client import REGISTRY  # type: ignore[import-not-found,unused-ignore]

        registry = REGISTRY
    registry.unregister(collector)


def exposition(*registries: Any) -> tuple[bytes, str]:
    """(body, content type) of the text exposition of ``registries`` (default: REGISTRY)."""
    try:
        from prometheus_client import (  # type: ignore[import-not-found,unused-ignore]
            CONTENT_TYPE_LATEST,
            REGISTRY,
            generate_latest,
        )
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(_MISSING) from exc
    body = b"".join(generate_latest(r) for r in (registries or (REGISTRY,)))
    return body, str(CONTENT_TYPE_LATEST)
