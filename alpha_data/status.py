"""What a Database reports about itself: ``Health`` (with I/O) and ``Stats`` (without).

``health`` round-trips PostgreSQL, the cache, each replica and the outbox
backlog and folds them into ok / degraded / down; ``stats`` and
``pool_status`` read counters and the live pool only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from alpha_data.health import ComponentHealth
from alpha_data.observability import probes
from alpha_data.observability.stats import Counters, EventStats, PoolStats, Stats
from alpha_data.outbox import Outbox
from alpha_data.retry import refusal
from alpha_data.urls import database_name, server_address

if TYPE_CHECKING:
    from alpha_data.database import Database

__all__ = ["Health", "health", "pool_status", "server_version", "stats"]

log = logging.getLogger("alpha_data.database")


@dataclass(frozen=True)
class Health:
    """What ``Database.health()`` reports: ``status`` is ok, degraded or down."""

    status: Literal["ok", "degraded", "down"]
    database: ComponentHealth
    cache: ComponentHealth
    pool: dict[str, int]
    #: One entry per configured read replica, keyed by ``host:port/database``.
    replicas: dict[str, ComponentHealth] = field(default_factory=dict)
    #: Undelivered after-commit effects (backlog, oldest age); None when not measured.
    outbox: ComponentHealth | None = None

    @property
    def ok(self) -> bool:
        """True when PostgreSQL is reachable (a degraded cache still serves)."""
        return self.status != "down"


async def server_version(engine: AsyncEngine) -> str:
    """``SHOW server_version`` on a fresh checkout: the cheapest proof PostgreSQL answers."""
    async with engine.connect() as conn:
        return str((await conn.execute(text("SHOW server_version"))).scalar_one())


def pool_status(
    engine: AsyncEngine,
    max_overflow: int,
    counters: Counters,
    read_engine: AsyncEngine | None = None,
) -> dict[str, int]:
    """Size, checked-out and overflow counts of the connection pool, and its waits
    (``read_*``: the read-only pool on the primary, once it exists)."""
    pool: Any = engine.pool
    out: dict[str, int] = {}
    for name in ("size", "checkedout", "overflow", "checkedin"):
        method = getattr(pool, name, None)
        if callable(method):
            out[name] = int(method())
    if "overflow" in out:  # QueuePool counts unopened pool slots as negative overflow
        out["overflow"] = max(0, out["overflow"])
    read: Any = read_engine.pool if read_engine is not None else None
    if read is not None:
        out["read_checkedout"] = int(read.checkedout())
        out["read_checkedin"] = int(read.checkedin())
    out["max_overflow"] = max_overflow
    out["waits"] = counters.pool_waits
    out["timeouts"] = counters.pool_timeouts
    return out


def stats(db: Database[Any]) -> Stats:
    """A typed snapshot of ``db``'s pool, unit-of-work, statement, cache and event counters."""
    counters = db.counters
    pool = db.pool_status()
    return Stats(
        pool=PoolStats(
            size=pool.get("size", 0),
            checked_out=pool.get("checkedout", 0),
            overflow=pool.get("overflow", 0),
            waits=counters.pool_waits,
            timeouts=counters.pool_timeouts,
            wait_seconds=counters.pool_wait_seconds,
            max_overflow=db.settings.max_overflow,
            checked_in=pool.get("checkedin", 0),
            read_checked_out=pool.get("read_checkedout", 0),
            read_checked_in=pool.get("read_checkedin", 0),
        ),
        uows=counters.uow_stats(),
        statements=counters.statement_stats(),
        cache=db.cache.stats(),
        events=EventStats(published=db.events.published, failed=db.events.failed),
        outbox=db.outbox.stats(),
    )


async def health(db: Database[Any]) -> Health:
    """Round-trip PostgreSQL, the cache, the replicas and the outbox of ``db``; never raises."""
    settings = db.settings
    database = await _database_health(db.engine, settings.database_url, settings.connect_timeout)
    cache, replicas, outbox = await asyncio.gather(
        db.cache.health(),
        probes.probe_replicas(settings.replica_urls, settings.connect_timeout),
        _outbox_health(db.outbox, settings.outbox_max_age, database.ok),
    )
    if db.router is not None:  # what read routing thinks of each replica
        routing = {str(r.get("replica")): r for r in db.router.status()}
        for where, replica in replicas.items():
            if where in routing:
                replica.detail["routing"] = routing[where]
    if not database.ok:
        status: Literal["ok", "degraded", "down"] = "down"
    elif not cache.ok or not outbox.ok or not all(r.ok for r in replicas.values()):
        status = "degraded"
    else:
        status = "ok"
    return Health(
        status=status,
        database=database,
        cache=cache,
        pool=db.pool_status(),
        replicas=replicas,
        outbox=outbox,
    )


async def _database_health(engine: AsyncEngine, url: str, timeout: float) -> ComponentHealth:
    """PostgreSQL's version and round trip, or why it cannot be reached."""
    where = server_address(url)
    started = time.perf_counter()
    try:
        version = await asyncio.wait_for(server_version(engine), timeout)
        return ComponentHealth(
            ok=True,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail={"server_version": str(version), "where": where},
        )
    except Exception as exc:
        return ComponentHealth(
            ok=False,
            latency_ms=None,
            error=refusal(exc, where, database_name(url))
            or f"cannot reach PostgreSQL at {where} ({type(exc).__name__})",
        )


async def _outbox_health(outbox: Outbox, limit: float, reachable: bool) -> ComponentHealth:
    """Degraded while the oldest undelivered outbox row is older than ``limit`` seconds."""
    try:
        if reachable:
            await outbox.measure()
    except Exception as exc:
        log.debug("outbox backlog query failed (%s)", type(exc).__name__)
    figures = outbox.stats()
    detail = {"backlog": figures.backlog, "oldest_age_s": round(figures.oldest_age, 3)}
    if figures.oldest_age > limit:
        return ComponentHealth(
            ok=False,
            latency_ms=None,
            error=f"after-commit effects undelivered for {figures.oldest_age:.1f} s "
            f"(limit {limit:g} s)",
            detail=detail,
        )
    return ComponentHealth(ok=True, latency_ms=None, detail=detail)
