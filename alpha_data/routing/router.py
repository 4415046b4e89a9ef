"""The Router: which server a read-only session uses, and the fence that guards replicas.

A replica serves a read only when it is healthy, has replayed past the
fence, and its lag (``Replica.lag`` at the moment of choosing) is at most
``replica_max_lag``. The fence starts pending: the primary's WAL position
when the monitor first runs (the *start fence*), so a Database never reads a
replica before it is known to have caught up with the primary as it was at
start. Each commit of a write session moves the fence again (read-your-writes).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from alpha_data.cancellation import deadline
from alpha_data.routing.failures import first_line
from alpha_data.routing.monitor import Monitor
from alpha_data.routing.probes import EngineProbes, Probes
from alpha_data.routing.replica import Replica, Route, Variants
from alpha_data.settings import Settings
from alpha_data.urls import where

__all__ = ["Fence", "Router", "primary_read_options"]

log = logging.getLogger("alpha_data.routing")

#: Back-off of probes of a failed replica: first retry after this, doubling up to the cap.
RETRY_FIRST = 0.25
RETRY_CAP = 30.0


def primary_read_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Execution options of a read-only session on the primary: a READ ONLY transaction.

    Autocommit cannot be made read-only per statement (and a session-level
    ``SET`` would leak through PgBouncer), so an autocommit read-only session
    runs on the primary as a READ COMMITTED ``READ ONLY`` transaction: a raw
    ``text("INSERT ...")`` fails there with SQLSTATE 25006, as on a standby.
    """
    if options.get("isolation_level") in (None, "AUTOCOMMIT"):
        return {**options, "isolation_level": "READ COMMITTED", "postgresql_readonly": True}
    return {**options, "postgresql_readonly": True}


class Fence:
    """The LSN a replica must have replayed to serve this Database's reads.

    ``requested`` counts fence requests (the start, then each write commit);
    ``covered`` the requests the LSN includes. While they differ the fence
    is *pending* and reads go to the primary.
    """

    def __init__(self) -> None:
        self.requested = 1  # the start fence
        self.covered = 0
        self.lsn = 0

    @property
    def pending(self) -> bool:
        """True while a request's LSN is not known yet."""
        return self.requested != self.covered

    def request(self) -> None:
        """A write committed: the next primary position read becomes the fence."""
        self.requested += 1

    def learn(self, target: int, lsn: int) -> None:
        """The primary was at ``lsn`` after the first ``target`` requests."""
        self.lsn = max(self.lsn, lsn)
        self.covered = max(self.covered, target)


class Router:
    """Chooses replica or primary for read-only sessions; its Monitor watches the replicas.

    Created by ``Database`` when ``replica_urls`` is set. The monitor task
    starts with the first routed read or commit and stops at ``close()``.
    ``probes`` and ``clock`` are for tests (fakes instead of servers).
    """

    def __init__(
        self,
        primary: AsyncEngine,
        replicas: Sequence[tuple[str, AsyncEngine]],
        *,
        check_interval: float = 1.0,
        max_lag: float = 10.0,
        read_your_writes: bool = True,
        probe_timeout: float = 2.0,
        probes: Probes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replicas = [Replica(name, engine) for name, engine in replicas]
        self.check_interval = check_interval
        self.max_lag = max_lag
        self.read_your_writes = read_your_writes
        self.probe_timeout = probe_timeout
        self.clock = clock
        self.fence = Fence()
        #: Reads re-run on the primary after their replica failed.
        self.fallbacks = 0
        self.probes = probes or EngineProbes(primary)
        self.monitor = Monitor(self, self.probes, clock)
        self._next = 0
        self._primary_variants: Variants = {}
        #: The primary's read-only autocommit pool (set by Database; None: READ ONLY transactions).
        self.read_primary: Callable[[], AsyncEngine | None] | None = None

    @classmethod
    def from_settings(
        cls, primary: AsyncEngine, settings: Settings, make_engine: Callable[[str], AsyncEngine]
    ) -> Router:
        """A Router over ``settings.replica_urls`` (engines built by ``make_engine``)."""
        replicas = [(where(url), make_engine(url)) for url in settings.replica_urls]
        return cls(
            primary,
            replicas,
            check_interval=settings.replica_check_interval,
            max_lag=settings.replica_max_lag,
            read_your_writes=settings.read_your_writes,
            probe_timeout=min(settings.connect_timeout, 2.0),
        )

    # -- routing ---------------------------------------------------------------

    def choose(self) -> Replica | None:
        """The next usable replica (round-robin), or None for the primary."""
        self.monitor.ensure_running()
        if self.fence.pending or not self.replicas:
            return None
        now = self.clock()
        count = len(self.replicas)
        for i in range(count):
            replica = self.replicas[(self._next + i) % count]
            if replica.usable(self.fence.lsn, self.max_lag, now):
                self._next = (self._next + i + 1) % count
                replica.served += 1
                return replica
        return None

    def route(self, options: Mapping[str, Any]) -> Route:
        """A Route for a new read-only session with ``options`` (isolation, read-only)."""
        replica = self.choose()
        if replica is None:
            return self.primary_route(options)
        engine = self._variant(replica, options)
        return Route(self, replica, engine, options, replay_lsn=replica.replay_lsn)

    def primary_route(self, options: Mapping[str, Any]) -> Route:
        """A Route to the primary (read-only there too: its read-only pool, else
        ``primary_read_options``)."""
        if self.read_primary is not None and options.get("isolation_level") == "AUTOCOMMIT":
            engine = self.read_primary()
            if engine is not None:
                return Route(self, None, engine, options)
        return Route(self, None, self._variant(None, primary_read_options(options)), options)

    def _variant(self, replica: Replica | None, options: Mapping[str, Any]) -> AsyncEngine:
        key = tuple(sorted(options.items()))
        cache = self._primary_variants if replica is None else replica.variants
        engine = cache.get(key)
        if engine is None:
            base = self.primary if replica is None else replica.engine
            engine = cache[key] = base.execution_options(**options) if options else base
        return engine

    # -- events from sessions ----------------------------------------------------

    def committed(self) -> None:
        """A write transaction of this Database committed: fence replica reads."""
        if not self.read_your_writes or not self.replicas:
            return
        self.fence.request()
        self.monitor.kick()

    async def commit_lsn(self, fences: bool = True) -> int:
        """A WAL position at or past every commit that has returned on the primary.

        The cache stamps invalidations with it, so a replica that replayed
        this far shows every change they announce (docs/caching.md). The
        flush position read with it is this Database's read-your-writes
        fence for its commits (also one whose COMMIT outcome was unknown),
        learned without waiting for a monitor sample. ``fences=False`` (a
        cache fence refresh, no commit of ours) moves no fence.
        """
        target = self.fence.requested  # every commit counted so far has returned
        async with deadline(self.probe_timeout):
            position = await self.probes.committed()
        if fences and self.read_your_writes and self.replicas:
            moved = position.flushed > self.fence.lsn
            self.fence.learn(target, position.flushed)
            if moved:
                self.monitor.kick()  # poll the replicas behind it now
        return position.inserted

    def failed(self, replica: Replica, exc: BaseException | str) -> None:
        """Mark ``replica`` down (warning on the first failure) and schedule a probe."""
        reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {first_line(exc)}"
        replica.last_error = reason
        replica.failures += 1
        replica.fresh_as_of = None  # learned again from its next answer
        replica.replay_lsn = 0  # a standby that restarted may show less than it did
        replica.failed_at = self.clock()
        delay = min(RETRY_CAP, RETRY_FIRST * 2 ** (replica.failures - 1))
        replica.retry_at = self.clock() + random.uniform(delay / 2, delay)  # noqa: S311
        if replica.healthy:
            replica.healthy = False
            others = sum(r.healthy for r in self.replicas)
            log.warning(
                "read replica %s unavailable (%s); reads go to %s until it answers again",
                replica.name,
                reason,
                f"the {others} other replica(s)" if others else "the primary",
            )
        self.monitor.kick()

    # -- reporting and lifecycle ---------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """One summary per replica: health, lag (an upper bound, as of now), reads served."""
        now = self.clock()
        return [r.status(now) for r in self.replicas]

    async def close(self) -> None:
        """Stop the monitor and dispose the replicas' pools."""
        await self.monitor.close()
        for replica in self.replicas:
            await replica.engine.dispose()
