"""Read routing: read-only units of work on streaming replicas, everything else on the primary.

* ``db.unit_of_work(read_only=True)`` (and so every cached read's miss in it)
  is served by a replica, round-robin over the usable ones. A replica is
  usable while its last probe succeeded, it is in recovery (not promoted),
  its measured lag is at most ``replica_max_lag`` and, for read-your-writes,
  it has replayed past the fence (below). With none usable the primary serves.
* Write units of work, ``db.run`` and SERIALIZABLE read-only units of work
  (a hot standby cannot run them) always use the primary.
* Read-your-writes (``read_your_writes``): every commit of a write session of
  this Database moves a fence. Until the fence is known, reads go to the
  primary; the monitor then reads ``pg_current_wal_flush_lsn()`` on the
  primary (a COMMIT returns only after its record is flushed, so this is at
  or past the end of every commit that finished before the query, and it
  never counts WAL the primary has not flushed, which no standby can have
  yet) and polls ``pg_last_wal_replay_lsn()`` on the replicas; a replica
  serves again once it has replayed past the fence. Nothing is added to a
  commit's or a read's latency; see docs/scaling.md.
* A replica that fails (refused, lost, shutting down) is marked down with a
  warning and probed again with exponential back-off; a read-only statement
  that failed on it is re-run on the primary when that is safe (autocommit
  reads, or the first statement of a read-only transaction), so the caller
  sees no error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from alpha_data.errors import TransientError, is_database_error, sqlstate_of, translate
from alpha_data.settings import Settings
from alpha_data.uow import DataSession, ReadOnlySession

__all__ = [
    "FencingSession",
    "Replica",
    "Route",
    "RoutedReadSession",
    "Router",
    "session_options",
]

log = logging.getLogger("alpha_data.routing")

#: Where a session finds its Router, its execution options and its current Route.
ROUTER_KEY = "alpha_data.router"
OPTIONS_KEY = "alpha_data.route_options"
ROUTE_KEY = "alpha_data.route"

#: Back-off of probes of a failed replica: first retry after this, doubling up to the cap.
RETRY_FIRST = 0.25
RETRY_CAP = 30.0
#: Polling of replicas that are behind the read-your-writes fence: first interval.
FENCE_POLL = 0.001
#: Primary LSN samples kept for the lag estimate (at most one per SAMPLE_EVERY s).
SAMPLE_EVERY = 0.1
SAMPLES = 600

_PRIMARY_LSN = text("SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint")
_REPLICA_STATE = text(
    "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
)
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


@dataclass(eq=False)
class Replica:
    """One read replica and what the monitor last learned about it."""

    name: str
    engine: AsyncEngine
    healthy: bool = True
    replay_lsn: int = 0
    lag: float | None = None
    lag_bytes: int | None = None
    lagging: bool = False
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    served: int = 0
    _variants: dict[tuple[tuple[str, Any], ...], AsyncEngine] = field(default_factory=dict)

    def usable(self, fence: int, max_lag: float) -> bool:
        """True when reads may go here now."""
        return (
            self.healthy and self.replay_lsn >= fence and (self.lag is None or self.lag <= max_lag)
        )

    def status(self) -> dict[str, Any]:
        """A JSON-friendly summary for health reports."""
        return {
            "replica": self.name,
            "healthy": self.healthy,
            "lag_s": None if self.lag is None else round(self.lag, 4),
            "lag_bytes": self.lag_bytes,
            "served": self.served,
            "error": self.last_error,
        }


@dataclass(eq=False)
class Route:
    """Where one read-only session's statements go (``replica`` None: the primary)."""

    router: Router
    replica: Replica | None
    engine: AsyncEngine
    options: Mapping[str, Any]
    statements: int = 0

    @property
    def may_fall_back(self) -> bool:
        """A failed statement may re-run on the primary without breaking the caller's view."""
        autocommit = self.options.get("isolation_level") == "AUTOCOMMIT"
        return self.replica is not None and (autocommit or self.statements == 0)


class Router:
    """Chooses replica or primary for read-only sessions and watches the replicas.

    Created by ``Database`` when ``replica_urls`` is set. The monitor task
    starts with the first routed read or commit and stops at ``close()``.
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
    ) -> None:
        self.primary = primary
        self.replicas = [Replica(name, engine) for name, engine in replicas]
        self.check_interval = check_interval
        self.max_lag = max_lag
        self.read_your_writes = read_your_writes
        self.probe_timeout = probe_timeout
        self.fallbacks = 0
        self._commits = 0  # write commits seen
        self._covered = 0  # commits whose LSN the fence includes
        self._fence = 0  # LSN a replica must have replayed to serve reads
        self._samples: deque[tuple[float, int]] = deque(maxlen=SAMPLES)
        self._primary_flushed = 0
        self._next = 0
        self._primary_variants: dict[tuple[tuple[str, Any], ...], AsyncEngine] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False

    @classmethod
    def from_settings(
        cls, primary: AsyncEngine, settings: Settings, make_engine: Callable[[str], AsyncEngine]
    ) -> Router:
        """A Router over ``settings.replica_urls`` (engines built by ``make_engine``)."""
        replicas = [(_where(url), make_engine(url)) for url in settings.replica_urls]
        return cls(
            primary,
            replicas,
            check_interval=settings.replica_check_interval,
            max_lag=settings.replica_max_lag,
            read_your_writes=settings.read_your_writes,
            probe_timeout=min(settings.connect_timeout, 2.0),
        )

    # -- routing ---------------------------------------------------------------

    @property
    def fence_pending(self) -> bool:
        """True while a commit's LSN is not known yet (reads go to the primary)."""
        return self._commits != self._covered

    def choose(self) -> Replica | None:
        """The next usable replica (round-robin), or None for the primary."""
        self._ensure_running()
        if self._commits != self._covered or not self.replicas:
            return None
        count = len(self.replicas)
        for i in range(count):
            replica = self.replicas[(self._next + i) % count]
            if replica.usable(self._fence, self.max_lag):
                self._next = (self._next + i + 1) % count
                replica.served += 1
                return replica
        return None

    def route(self, options: Mapping[str, Any]) -> Route:
        """A Route for a new read-only session with ``options`` (isolation, read-only)."""
        replica = self.choose()
        return Route(self, replica, self._variant(replica, options), options)

    def primary_route(self, options: Mapping[str, Any]) -> Route:
        """A Route to the primary."""
        return Route(self, None, self._variant(None, options), options)

    def _variant(self, replica: Replica | None, options: Mapping[str, Any]) -> AsyncEngine:
        key = tuple(sorted(options.items()))
        cache = self._primary_variants if replica is None else replica._variants
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
        self._commits += 1
        self._kick()

    def failed(self, replica: Replica, exc: BaseException | str) -> None:
        """Mark ``replica`` down (warning on the first failure) and schedule a probe."""
        reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {_first_line(exc)}"
        replica.last_error = reason
        replica.failures += 1
        delay = min(RETRY_CAP, RETRY_FIRST * 2 ** (replica.failures - 1))
        replica.retry_at = time.monotonic() + random.uniform(delay / 2, delay)  # noqa: S311
        if replica.healthy:
            replica.healthy = False
            others = sum(r.healthy for r in self.replicas)
            log.warning(
                "read replica %s unavailable (%s); reads go to %s until it answers again",
                replica.name,
                reason,
                f"the {others} other replica(s)" if others else "the primary",
            )
        self._kick()

    # -- monitor -----------------------------------------------------------------

    def _kick(self) -> None:
        self._ensure_running()
        if self._wake is not None:
            self._wake.set()

    def _ensure_running(self) -> None:
        if self._closed or not self.replicas:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is not None and not self._task.done() and self._loop is loop:
            return
        self._loop = loop
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._monitor(), name="alpha_data.replica-monitor")

    async def _monitor(self) -> None:
        next_check = 0.0
        poll = FENCE_POLL
        wake = self._wake
        assert wake is not None
        while not self._closed:
            wake.clear()
            now = time.monotonic()
            periodic = now >= next_check
            if periodic:
                next_check = now + self.check_interval
            try:
                await self._round(periodic)
            except Exception:  # the monitor must survive anything
                log.exception("replica monitor round failed")
            if self._commits != self._covered:
                continue  # commits arrived during the round: fence them now
            behind = [r for r in self.replicas if r.healthy and r.replay_lsn < self._fence]
            waits = [next_check - time.monotonic()]
            waits += [r.retry_at - time.monotonic() for r in self.replicas if not r.healthy]
            if behind:
                waits.append(poll)
                poll = min(poll * 2, self.check_interval)
            else:
                poll = FENCE_POLL
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0.0, min(waits)))

    async def _round(self, periodic: bool) -> None:
        """Learn the fence (if commits are pending) and probe the replicas that are due."""
        target = self._commits
        if target != self._covered or periodic:
            try:
                lsn = await asyncio.wait_for(self._primary_lsn(), self.probe_timeout)
            except Exception as exc:  # the primary is unreachable: its reads will say so
                log.debug("cannot read the primary's WAL position: %r", exc)
                if target != self._covered:
                    await asyncio.sleep(min(self.check_interval, 0.1))
            else:
                self._sample(lsn)
                if target != self._covered:
                    self._fence = max(self._fence, lsn)
                    self._covered = target
        now = time.monotonic()
        due = [
            r
            for r in self.replicas
            if (r.healthy and (periodic or r.replay_lsn < self._fence))
            or (not r.healthy and now >= r.retry_at)
        ]
        if due:
            await asyncio.gather(*(self._probe(r) for r in due))

    async def _primary_lsn(self) -> int:
        async with self._variant(None, _AUTOCOMMIT).connect() as conn:
            return int((await conn.execute(_PRIMARY_LSN)).scalar_one())

    async def _probe(self, replica: Replica) -> None:
        try:
            row = await asyncio.wait_for(self._replica_state(replica), self.probe_timeout)
        except Exception as exc:
            self.failed(replica, exc)
            return
        in_recovery, lsn = row
        if not in_recovery:
            self.failed(replica, "not in recovery (promoted?): it no longer follows the primary")
            return
        replica.replay_lsn = max(replica.replay_lsn, int(lsn or 0))
        replica.lag, replica.lag_bytes = self._lag(replica.replay_lsn)
        lagging = replica.lag > self.max_lag
        if lagging != replica.lagging:
            replica.lagging = lagging
            if lagging:
                log.warning(
                    "read replica %s is %.1f s behind the primary (replica_max_lag %.1f s); "
                    "it serves no reads until it catches up",
                    replica.name,
                    replica.lag,
                    self.max_lag,
                )
            else:
                log.warning("read replica %s caught up; routing reads to it", replica.name)
        if not replica.healthy:
            replica.healthy = True
            replica.failures = 0
            replica.last_error = None
            log.warning("read replica %s answers again; routing reads to it", replica.name)

    async def _replica_state(self, replica: Replica) -> tuple[bool, int | None]:
        async with self._variant(replica, _AUTOCOMMIT).connect() as conn:
            row = (await conn.execute(_REPLICA_STATE)).one()
        return bool(row[0]), row[1]

    def _sample(self, lsn: int) -> None:
        now = time.monotonic()
        self._primary_flushed = max(self._primary_flushed, lsn)
        if not self._samples or now - self._samples[-1][0] >= SAMPLE_EVERY:
            self._samples.append((now, lsn))

    def _lag(self, replay: int) -> tuple[float, int]:
        """Seconds since the primary had flushed WAL this replica has not replayed; bytes behind.

        The seconds are a lower bound, short by up to SAMPLE_EVERY.
        """
        behind = max(0, self._primary_flushed - replay)
        for at, lsn in self._samples:
            if lsn > replay:
                return max(0.0, time.monotonic() - at), behind
        return 0.0, behind

    # -- reporting and lifecycle ---------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """One summary per replica (health, lag, reads served)."""
        return [r.status() for r in self.replicas]

    async def close(self) -> None:
        """Stop the monitor and dispose the replicas' pools."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for replica in self.replicas:
            await replica.engine.dispose()


# -- sessions -----------------------------------------------------------------------


class FencingSession(DataSession):
    """Session of write units of work: each commit fences replica reads (read-your-writes)."""


@event.listens_for(FencingSession, "after_commit")
def _fence_after_commit(session: Session) -> None:
    router: Router | None = session.info.get(ROUTER_KEY)
    if router is not None:
        router.committed()


class RoutedReadSession(ReadOnlySession):
    """Read-only session whose statements go where its Router sends them.

    The route is chosen when the first statement needs a connection and kept
    until the transaction ends (an autocommit session: until it is closed).
    A replica that cannot give a connection, or fails a statement run through
    ``execute``, is replaced by the primary when that is safe (Route.may_fall_back).
    """

    def get_bind(self, mapper: Any = None, *, bind: Any = None, **kw: Any) -> Engine | Connection:
        """The engine of this session's route (a replica's, or the primary's)."""
        if bind is not None:
            return super().get_bind(mapper, bind=bind, **kw)
        route: Route | None = self.info.get(ROUTE_KEY)
        if route is None:
            router: Router | None = self.info.get(ROUTER_KEY)
            if router is None:
                return super().get_bind(mapper, **kw)
            route = router.route(self.info.get(OPTIONS_KEY) or {})
            self.info[ROUTE_KEY] = route
        return route.engine.sync_engine

    def connection(
        self,
        bind_arguments: dict[str, Any] | None = None,
        execution_options: Any = None,
    ) -> Connection:
        """The route's connection; the primary's when the replica refuses one.

        Whoever asks for the connection runs statements on it that this
        session cannot re-run: the route counts as used from here on.
        """
        try:
            conn = super().connection(bind_arguments, execution_options)
        except Exception as exc:
            if (bind_arguments or {}).get("bind") is not None or not _fall_back(self, exc):
                raise
            conn = super().connection(bind_arguments, execution_options)
        route: Route | None = self.info.get(ROUTE_KEY)
        if route is not None:
            route.statements += 1
        return conn


def _fall_back(session: Session, exc: BaseException) -> bool:
    """Switch ``session`` to the primary after its replica failed, if that is safe."""
    route: Route | None = session.info.get(ROUTE_KEY)
    kind = _replica_failure(exc)
    if route is None or route.replica is None or kind is None or not route.may_fall_back:
        return False
    if kind == "down":
        route.router.failed(route.replica, exc)
    else:
        log.info(
            "read on replica %s failed (%s); re-running it on the primary",
            route.replica.name,
            kind,
        )
    route.router.fallbacks += 1
    session.info[ROUTE_KEY] = route.router.primary_route(route.options)
    return True


@event.listens_for(RoutedReadSession, "do_orm_execute")
def _read_with_fallback(state: ORMExecuteState) -> Any:
    """Run the statement; if its replica failed and it is safe, re-run it on the primary."""
    session = state.session
    if ROUTER_KEY not in session.info or state.bind_arguments.get("bind") is not None:
        return None
    try:
        result = state.invoke_statement()
    except Exception as exc:
        if not _fall_back(session, exc):
            raise
        result = state.invoke_statement()
    route: Route | None = session.info.get(ROUTE_KEY)
    if route is not None:
        route.statements += 1
    return result


@event.listens_for(RoutedReadSession, "after_transaction_end")
def _forget_route(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(ROUTE_KEY, None)


def _replica_failure(exc: BaseException) -> str | None:
    """Why a statement failed on a replica, if re-running it on the primary can help."""
    code = sqlstate_of(exc)
    if code == "40001":
        return "recovery conflict"  # cancelled by WAL replay on the standby
    if code is not None:
        return "down" if code.startswith(("08", "57P")) else None
    if isinstance(exc, PoolTimeoutError):
        return "pool timeout"
    if isinstance(exc, (OSError, asyncio.TimeoutError)) or is_database_error(exc):
        return "down" if isinstance(translate(exc), TransientError) else None
    return None


def _where(url: str) -> str:
    """``host:port/database`` of a PostgreSQL URL (no credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def session_options(
    router: Router | None, *, read_only: bool, execution_options: Mapping[str, Any]
) -> dict[str, Any]:
    """``sessionmaker`` arguments (session class, info) for one kind of session.

    Without a router: the plain classes. Write sessions fence replica reads
    at each commit; read-only ones are routed, except SERIALIZABLE (which a
    hot standby refuses).
    """
    if router is None or not router.replicas:
        return {"sync_session_class": ReadOnlySession if read_only else DataSession}
    if not read_only:
        return {"sync_session_class": FencingSession, "info": {ROUTER_KEY: router}}
    if execution_options.get("isolation_level") == "SERIALIZABLE":
        return {"sync_session_class": ReadOnlySession}
    return {
        "sync_session_class": RoutedReadSession,
        "info": {ROUTER_KEY: router, OPTIONS_KEY: dict(execution_options)},
    }
