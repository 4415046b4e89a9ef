"""Typed snapshots of the data layer's counters (``db.stats()``) and the counters themselves.

The :class:`Counters` object belongs to one ``Database``: the statement and
pool hooks and every unit of work add to it with plain integer increments
(no locks: the event loop is single-threaded). ``db.stats()`` copies it into
an immutable :class:`Stats`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from alpha_data.cache.cache import CacheStats

__all__ = [
    "COMMITTED",
    "FAILED",
    "OUTCOMES",
    "READ_ONLY",
    "ROLLED_BACK",
    "Counters",
    "EventStats",
    "PoolStats",
    "StatementStats",
    "Stats",
    "UowStats",
    "UowTracer",
]

#: A unit of work whose ``commit()`` succeeded.
COMMITTED = "committed"
#: A writable unit of work left without committing (or rolled back explicitly).
ROLLED_BACK = "rolled_back"
#: A read-only unit of work that ended without an error (nothing to commit).
READ_ONLY = "read_only"
#: A unit of work left by an exception (counted by error class).
FAILED = "failed"
OUTCOMES = (COMMITTED, ROLLED_BACK, READ_ONLY, FAILED)


@dataclass(frozen=True)
class PoolStats:
    """The connection pool: ``size`` kept open at most idle, ``checked_out`` in use now,
    ``overflow`` connections beyond ``size`` now; ``waits`` checkouts that found no free
    connection and had to wait, ``timeouts`` of those that gave up after ``pool_timeout``,
    ``wait_seconds`` their total waiting time (since the Database was created)."""

    size: int
    checked_out: int
    overflow: int
    waits: int
    timeouts: int
    wait_seconds: float = 0.0
    max_overflow: int = 0
    checked_in: int = 0
    #: The read-only pool on the primary (``Database.read_engine``): in use and idle now.
    read_checked_out: int = 0
    read_checked_in: int = 0


@dataclass(frozen=True)
class UowStats:
    """Units of work by outcome: ``committed``, ``rolled_back`` (writable, left without
    commit), ``read_only`` (ended without error), ``failed_by_error`` (error class name →
    count, e.g. ``{"ConflictError": 2}``); ``retried`` counts re-runs by ``db.run``."""

    committed: int
    rolled_back: int
    retried: int
    failed_by_error: dict[str, int] = field(default_factory=dict)
    read_only: int = 0

    @property
    def failed(self) -> int:
        """All failed units of work, whatever the error."""
        return sum(self.failed_by_error.values())


@dataclass(frozen=True)
class StatementStats:
    """SQL statements sent (``count``) and how many were slower than ``slow_query_ms``."""

    count: int
    slow: int


@dataclass(frozen=True)
class EventStats:
    """Events published to the bus, and publishes that failed (bus down)."""

    published: int
    failed: int


@dataclass(frozen=True)
class Stats:
    """Everything ``db.stats()`` reports, as one immutable snapshot."""

    pool: PoolStats
    uows: UowStats
    statements: StatementStats
    cache: CacheStats
    events: EventStats
    #: Transactional outbox (alpha_data.outbox.OutboxStats); None without one.
    outbox: Any = None

    def as_dict(self) -> dict[str, Any]:
        """Nested plain dict (for JSON, logs or a health endpoint)."""
        return asdict(self)


class UowTracer(Protocol):
    """What a tracing integration plugs into ``Counters.tracer`` (see integrations.otel)."""

    def start(self, uow: Any) -> Any:
        """Called when a unit of work is entered; returns a handle given back to ``finish``."""

    def finish(
        self, handle: Any, uow: Any, outcome: str, error: str | None, duration_s: float
    ) -> None:
        """Called once when the unit of work has ended (after its session was closed)."""


class Counters:
    """The running counts behind ``db.stats()``, owned by one Database.

    ``enabled`` is read by the units of work and hooks; flip it (and install
    or remove the hooks) with :func:`alpha_data.observability.set_metrics_enabled`.
    ``tracer`` is set by a tracing integration; ``active`` is true when either
    is on, so a unit of work skips all bookkeeping when neither is.
    """

    __slots__ = (
        "_tracer",
        "active",
        "committed",
        "enabled",
        "failed_by_error",
        "pool_timeouts",
        "pool_wait_seconds",
        "pool_waits",
        "read_only",
        "retried",
        "rolled_back",
        "slow_statements",
        "statements",
    )

    def __init__(self) -> None:
        self.enabled = True
        self._tracer: UowTracer | None = None
        self.active = True
        self.committed = 0
        self.rolled_back = 0
        self.read_only = 0
        self.retried = 0
        self.failed_by_error: dict[str, int] = {}
        self.statements = 0
        self.slow_statements = 0
        self.pool_waits = 0
        self.pool_timeouts = 0
        self.pool_wait_seconds = 0.0

    @property
    def tracer(self) -> UowTracer | None:
        """The tracing hook of the units of work (None: tracing off)."""
        return self._tracer

    @tracer.setter
    def tracer(self, value: UowTracer | None) -> None:
        self._tracer = value
        self.active = self.enabled or value is not None

    def set_enabled(self, enabled: bool) -> None:
        """Count (True) or stop counting (False); values counted so far are kept."""
        self.enabled = enabled
        self.active = enabled or self._tracer is not None

    def record_uow(self, outcome: str, error: str | None) -> None:
        """Count one finished unit of work."""
        if outcome == READ_ONLY:
            self.read_only += 1
        elif outcome == COMMITTED:
            self.committed += 1
        elif outcome == ROLLED_BACK:
            self.rolled_back += 1
        else:
            name = error or "Exception"
            self.failed_by_error[name] = self.failed_by_error.get(name, 0) + 1

    def uow_stats(self) -> UowStats:
        """Snapshot of the unit-of-work counts."""
        return UowStats(
            committed=self.committed,
            rolled_back=self.rolled_back,
            retried=self.retried,
            failed_by_error=dict(self.failed_by_error),
            read_only=self.read_only,
        )

    def statement_stats(self) -> StatementStats:
        """Snapshot of the statement counts."""
        return StatementStats(count=self.statements, slow=self.slow_statements)
