"""Database: the engine and pool, session factory, Redis client, health and retry."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast, overload
from urllib.parse import urlsplit

import orjson
from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from alpha_data.cache import Cache, make_cache_backend
from alpha_data.cache.redis_client import is_cluster
from alpha_data.errors import DatabaseUnavailableError, TransientError, is_retryable, sqlstate_of
from alpha_data.events import EventBus
from alpha_data.health import ComponentHealth
from alpha_data.observability import probes, sqlhooks
from alpha_data.observability.stats import Counters, EventStats, PoolStats, Stats
from alpha_data.pgbouncer import check_statement_timeout, connect_args
from alpha_data.repositories.rules import register_rules
from alpha_data.routing import Router, primary_read_options, session_options
from alpha_data.settings import Settings
from alpha_data.uow import DataSession, IsolationLevel, ReadOnlySession, UnitOfWork

if TYPE_CHECKING:
    from typing_extensions import Self
    from typing_extensions import TypeVar as DefaultTypeVar

    #: The unit-of-work class a Database builds (``UnitOfWork`` unless the app passes its own).
    #: Covariant: a ``Database[AppUoW]`` is a ``Database`` to the library's services.
    U = DefaultTypeVar("U", bound=UnitOfWork, covariant=True, default=UnitOfWork)
else:  # no runtime dependency on typing_extensions; only type checkers read the default
    U = TypeVar("U", bound=UnitOfWork, covariant=True)

__all__ = ["ComponentHealth", "Database", "Health", "Stats"]

log = logging.getLogger("alpha_data.database")

T = TypeVar("T")

_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0


@dataclass(frozen=True)
class Health:
    """What ``Database.health()`` reports: ``status`` is ok, degraded or down."""

    status: Literal["ok", "degraded", "down"]
    database: ComponentHealth
    cache: ComponentHealth
    pool: dict[str, int]
    #: One entry per configured read replica, keyed by ``host:port/database``.
    replicas: dict[str, ComponentHealth] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when PostgreSQL is reachable (a degraded cache still serves)."""
        return self.status != "down"


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with full jitter for the given (1-based) attempt."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))  # noqa: S311


class Database(Generic[U]):
    """Owns everything that talks to PostgreSQL and Redis; create one per application.

    ``async with Database(settings) as db:`` connects and closes. An
    application with a UnitOfWork subclass of its own (say, one with a
    ``watchlists`` property) passes ``unit_of_work_class=AppUoW``: then
    ``db.unit_of_work()``, ``db.run`` and the FastAPI dependency build and
    are typed as ``AppUoW`` (``Database[AppUoW]``). The subclass keeps
    UnitOfWork's constructor.
    """

    @overload
    def __init__(self: Database[UnitOfWork], settings: Settings | None = None) -> None: ...

    @overload
    def __init__(
        self, settings: Settings | None = None, *, unit_of_work_class: type[U]
    ) -> None: ...

    def __init__(
        self, settings: Settings | None = None, *, unit_of_work_class: type[Any] = UnitOfWork
    ) -> None:
        uow_class = unit_of_work_class
        if not (isinstance(uow_class, type) and issubclass(uow_class, UnitOfWork)):
            raise TypeError("unit_of_work_class must be a subclass of alpha_data.UnitOfWork")
        self._uow_class = cast("type[U]", unit_of_work_class)
        register_rules()  # the library's cache tag rules (idempotent; they compose with an app's)
        self.settings = settings or Settings()
        s = self.settings
        self.engine: AsyncEngine = self._make_engine(s.database_url)
        #: What ``stats()`` reports; statement/pool hooks and units of work count into it.
        self.counters = Counters()
        sqlhooks.install(self.engine, self.counters, s.slow_query_ms)
        #: Sends read-only units of work to replicas (None without ``replica_urls``).
        self.router: Router | None = (
            Router.from_settings(self.engine, s, self._replica_engine) if s.replica_urls else None
        )
        #: The read-only pool on the primary (``read_engine``), built on first use.
        self._read_engine: AsyncEngine | None = None
        if self.router is not None and not s.pgbouncer_mode:
            self.router.read_primary = self._read_only_engine
        self._sessions = self._make_sessions(read_only=False)
        self._read_sessions: async_sessionmaker[AsyncSession] | None = None
        self._isolated: dict[tuple[str, bool], async_sessionmaker[AsyncSession]] = {}
        backend = make_cache_backend(s)
        self.cache: Cache = Cache(
            backend,
            # On Redis Cluster every key of a deployment shares one hash slot
            # (a read's entry and tag tokens go in one MGET/script/MULTI).
            prefix=f"{{{s.cache_prefix}}}" if is_cluster(backend.client) else s.cache_prefix,
            ttl=s.cache_ttl,
            negative_ttl=s.cache_negative_ttl,
            enabled=s.cache_enabled,
        )
        self.events = EventBus(self.cache.backend, prefix=s.cache_prefix)
        self._closed = False

    def _make_engine(self, url: str, *, read_only: bool = False) -> AsyncEngine:
        """An engine and pool for ``url`` (the primary or a replica) from Settings.

        ``read_only``: autocommit connections on which every statement runs
        READ ONLY (see ``read_engine``).
        """
        s = self.settings
        extra: dict[str, Any] = {}
        if read_only:
            # Nothing to roll back on return: autocommit, and nothing can be written.
            extra = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
        engine = create_async_engine(
            url,
            **extra,
            pool_size=s.pool_size,
            max_overflow=s.max_overflow,
            pool_timeout=s.pool_timeout,
            pool_recycle=s.pool_recycle,
            # SQLAlchemy's pre-ping costs BEGIN + ping + ROLLBACK per checkout;
            # _drop_dead_connections (below) finds killed backends for free.
            pool_pre_ping=False,
            # AsyncAdaptedQueuePool that counts waits and timeouts for stats().
            poolclass=sqlhooks.ObservedPool,
            echo=s.echo,
            hide_parameters=True,
            # SQLAlchemy logs on sqlalchemy.engine.Engine.alpha_data, whose
            # DEBUG result rows sqlhooks.install() blanks (they may hold hashes).
            logging_name="alpha_data",
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args=connect_args(s, read_only=read_only),
        )
        if s.pool_pre_ping:
            event.listen(engine.sync_engine.pool, "checkout", _drop_dead_connections)
        return engine

    @property
    def read_engine(self) -> AsyncEngine | None:
        """The read-only pool on the primary, once a read-only unit of work has used it.

        Read-only units of work (``read_only=True``, no isolation level) that
        run on the primary use it: autocommit connections opened with
        ``default_transaction_read_only=on``, so a read costs one round trip
        (no BEGIN READ ONLY / ROLLBACK) and a raw write still fails with
        ReadOnlyError. Sized like the main pool (``pool_size``,
        ``max_overflow``); its statements run ``db.engine``'s engine events.
        None in ``pgbouncer_mode`` (startup parameters do not reach the
        server there: read-only units of work run as READ ONLY transactions).
        """
        return self._read_engine

    def _read_only_engine(self) -> AsyncEngine | None:
        if self.settings.pgbouncer_mode:
            return None
        engine = self._read_engine
        if engine is None:
            engine = self._make_engine(self.settings.database_url, read_only=True)
            sqlhooks.share_events(engine, self.engine, self.counters)
            self._read_engine = engine
        return engine

    def _replica_engine(self, url: str) -> AsyncEngine:
        engine = self._make_engine(url)
        sqlhooks.install(engine, self.counters, self.settings.slow_query_ms)
        return engine

    def __repr__(self) -> str:
        return f"Database({self.settings.safe_database_url!r})"

    @property
    def redis(self) -> Any:
        """The redis-py asyncio client, or None when ``redis_url`` is ``memory://``."""
        return self.cache.backend.client

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _refusal(self, exc: BaseException) -> str | None:
        return _refusal(exc, self._where(), urlsplit(self.settings.database_url).path.lstrip("/"))

    def _where(self) -> str:
        parts = urlsplit(self.settings.database_url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"

    async def connect(self) -> None:
        """Wait until PostgreSQL answers, retrying with backoff until ``connect_timeout``.

        Raises DatabaseUnavailableError naming host and port. Redis is only
        probed: an unreachable cache is logged and the layer runs without it.
        """
        deadline = time.monotonic() + self.settings.connect_timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                remaining = max(0.1, deadline - time.monotonic())
                await asyncio.wait_for(self._server_version(), remaining)
                break
            except Exception as exc:
                refused = self._refusal(exc)
                if refused or time.monotonic() + 0.05 >= deadline:
                    reason = refused or (
                        f"cannot reach PostgreSQL at {self._where()} after {attempt} attempts "
                        f"({type(exc).__name__})"
                    )
                    raise DatabaseUnavailableError(
                        f"{reason}; set ALPHA_DATA_DATABASE_URL to point elsewhere"
                    ) from None
                await asyncio.sleep(
                    min(backoff_delay(attempt), max(0.0, deadline - time.monotonic()))
                )
        if self.settings.pgbouncer_mode:
            await check_statement_timeout(self.engine, self.settings)
        if self.cache.enabled and not await self.cache.backend.ping():
            log.warning("cache backend unreachable at start-up; running without cache")

    async def close(self) -> None:
        """Dispose the pool and close Redis; the Database cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        await self.events.close()
        await self.cache.close()
        if self.router is not None:
            await self.router.close()
        await self.engine.dispose()
        if self._read_engine is not None:
            await self._read_engine.dispose()

    # -- sessions and units of work -----------------------------------------

    def use_connection(self, connection: AsyncConnection) -> None:
        """Route every session through ``connection`` (savepoints inside its transaction).

        For test isolation: the caller opens an outer transaction on
        ``connection`` and rolls it back at the end; ``uow.commit()`` then
        commits a SAVEPOINT only (SQLAlchemy's join_transaction_mode).
        """
        kw: dict[str, Any] = {
            "bind": connection,
            "expire_on_commit": False,
            "join_transaction_mode": "create_savepoint",
        }
        self._sessions = async_sessionmaker(**kw, sync_session_class=DataSession)
        reads = self._read_sessions = async_sessionmaker(**kw, sync_session_class=ReadOnlySession)
        self._isolated = {
            (level, ro): reads if ro else self._sessions
            for level in ("READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")
            for ro in (False, True)
        }

    def session(self) -> AsyncSession:
        """A bare AsyncSession (``expire_on_commit=False``) for code that needs one."""
        return self._sessions()

    def _session_factory(
        self, isolation_level: IsolationLevel | None, read_only: bool
    ) -> async_sessionmaker[AsyncSession]:
        if isolation_level is None:
            if not read_only:
                return self._sessions
            factory = self._read_sessions
            if factory is None:
                factory = self._read_sessions = self._make_sessions(
                    read_only=True, autoflush=False, isolation_level="AUTOCOMMIT"
                )
            return factory
        key = (isolation_level, read_only)
        factory = self._isolated.get(key)
        if factory is None:
            factory = self._isolated[key] = self._make_sessions(
                read_only=read_only, isolation_level=isolation_level, postgresql_readonly=read_only
            )
        return factory

    def _make_sessions(
        self, *, read_only: bool, autoflush: bool = True, **execution_options: Any
    ) -> async_sessionmaker[AsyncSession]:
        """A session factory on the primary engine with ``execution_options`` (routed if set)."""
        read_engine = None
        if read_only and execution_options.get("isolation_level") == "AUTOCOMMIT":
            read_engine = self._read_only_engine()
        if read_engine is not None:  # autocommit on the read-only pool
            engine = read_engine
        else:
            # A read-only session is read-only on the primary too (a READ ONLY transaction).
            primary = primary_read_options(execution_options) if read_only else execution_options
            engine = self.engine.execution_options(**primary) if primary else self.engine
        return async_sessionmaker(
            engine,
            expire_on_commit=False,
            autoflush=autoflush,
            **session_options(
                self.router, read_only=read_only, execution_options=execution_options
            ),
        )

    def unit_of_work(
        self, *, read_only: bool = False, isolation_level: IsolationLevel | None = None
    ) -> U:
        """A new unit of work (``unit_of_work_class``): one session, one transaction.

        ``read_only=True`` refuses writes, also raw SQL (``ReadOnlyError``): each
        read runs in autocommit, on a replica or on the primary's read-only
        pool (``read_engine``); with an isolation level, or in pgbouncer_mode,
        in a READ ONLY transaction.
        """
        return self._uow_class(
            self._session_factory(isolation_level, read_only),
            read_only=read_only,
            cache=self.cache,
            events=self.events,
            # A snapshot or serializable transaction must read what PostgreSQL
            # shows it (and let SSI see the reads); it still invalidates.
            cache_reads=isolation_level in (None, "READ COMMITTED"),
            counters=self.counters,
        )

    async def run(
        self,
        fn: Callable[[U], Awaitable[T]],
        *,
        attempts: int = 3,
        isolation_level: IsolationLevel | None = None,
        idempotent: bool = False,
    ) -> T:
        """Run ``fn(uow)`` in a fresh UoW and commit; re-run it whole on transient failures.

        Retries serialization failures, deadlocks and connections lost before
        COMMIT was sent (backoff with full jitter). A connection lost while
        COMMIT was in flight is retried only when ``idempotent`` is true.
        """
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        attempt = 0
        while True:
            attempt += 1
            try:
                uow = self.unit_of_work(isolation_level=isolation_level)
                uow.attempt = attempt
                async with uow:
                    result = await fn(uow)
                    await uow.commit()
                return result
            except TransientError as exc:
                retry = is_retryable(exc) or (idempotent and exc.outcome_unknown)
                if not retry:
                    raise
                if attempt >= attempts:
                    log.warning(
                        "transaction failed after %d attempts (SQLSTATE %s)",
                        attempt,
                        exc.sqlstate,
                        extra={
                            "attempt": attempt,
                            "attempts": attempts,
                            "sqlstate": exc.sqlstate,
                            "error": type(exc).__name__,
                        },
                    )
                    raise TransientError(
                        f"gave up after {attempts} attempts: {exc.message}",
                        sqlstate=exc.sqlstate,
                    ) from exc
                delay = backoff_delay(attempt)
                if self.counters.enabled:
                    self.counters.retried += 1
                log.info(
                    "retrying transaction after attempt %d of %d (SQLSTATE %s, backoff %.3f s)",
                    attempt,
                    attempts,
                    exc.sqlstate,
                    delay,
                    extra={
                        "attempt": attempt,
                        "attempts": attempts,
                        "sqlstate": exc.sqlstate,
                        "error": type(exc).__name__,
                        "backoff_s": delay,
                    },
                )
                await asyncio.sleep(delay)

    # -- health --------------------------------------------------------------

    async def _server_version(self) -> str:
        async with self.engine.connect() as conn:
            return str((await conn.execute(text("SHOW server_version"))).scalar_one())

    def pool_status(self) -> dict[str, int]:
        """Size, checked-out and overflow counts of the connection pool, and its waits."""
        pool: Any = self.engine.pool
        out: dict[str, int] = {}
        for name in ("size", "checkedout", "overflow", "checkedin"):
            method = getattr(pool, name, None)
            if callable(method):
                out[name] = int(method())
        if "overflow" in out:  # QueuePool counts unopened pool slots as negative overflow
            out["overflow"] = max(0, out["overflow"])
        read: Any = self._read_engine.pool if self._read_engine is not None else None
        if read is not None:  # the read-only pool on the primary (see read_engine)
            out["read_checkedout"] = int(read.checkedout())
            out["read_checkedin"] = int(read.checkedin())
        out["max_overflow"] = self.settings.max_overflow
        out["waits"] = self.counters.pool_waits
        out["timeouts"] = self.counters.pool_timeouts
        return out

    def stats(self) -> Stats:
        """A typed snapshot of pool, unit-of-work, statement, cache and event counters.

        Counts run from the creation of this Database (see docs/operations.md);
        the pool's size, checked-out and overflow numbers are live. Cheap and
        synchronous: no I/O.
        """
        counters = self.counters
        pool = self.pool_status()
        return Stats(
            pool=PoolStats(
                size=pool.get("size", 0),
                checked_out=pool.get("checkedout", 0),
                overflow=pool.get("overflow", 0),
                waits=counters.pool_waits,
                timeouts=counters.pool_timeouts,
                wait_seconds=counters.pool_wait_seconds,
                max_overflow=self.settings.max_overflow,
                checked_in=pool.get("checkedin", 0),
                read_checked_out=pool.get("read_checkedout", 0),
                read_checked_in=pool.get("read_checkedin", 0),
            ),
            uows=counters.uow_stats(),
            statements=counters.statement_stats(),
            cache=self.cache.stats(),
            events=EventStats(published=self.events.published, failed=self.events.failed),
        )

    async def health(self) -> Health:
        """Round-trip PostgreSQL and the cache; never raises."""
        started = time.perf_counter()
        try:
            version = await asyncio.wait_for(self._server_version(), self.settings.connect_timeout)
            database = ComponentHealth(
                ok=True,
                latency_ms=(time.perf_counter() - started) * 1000,
                detail={"server_version": str(version), "where": self._where()},
            )
        except Exception as exc:
            database = ComponentHealth(
                ok=False,
                latency_ms=None,
                error=self._refusal(exc)
                or f"cannot reach PostgreSQL at {self._where()} ({type(exc).__name__})",
            )
        cache, replicas = await asyncio.gather(
            self.cache.health(),
            probes.probe_replicas(self.settings.replica_urls, self.settings.connect_timeout),
        )
        if self.router is not None:  # what read routing thinks of each replica
            routing = {str(r.get("replica")): r for r in self.router.status()}
            for where, replica in replicas.items():
                if where in routing:
                    replica.detail["routing"] = routing[where]
        if not database.ok:
            status: Literal["ok", "degraded", "down"] = "down"
        elif not cache.ok or not all(r.ok for r in replicas.values()):
            status = "degraded"
        else:
            status = "ok"
        return Health(
            status=status,
            database=database,
            cache=cache,
            pool=self.pool_status(),
            replicas=replicas,
        )


def _refusal(exc: BaseException, where: str = "", name: str = "") -> str | None:
    """A reason that retrying cannot cure: missing database or rejected login."""
    code = sqlstate_of(exc)
    if code == "3D000":
        return f"database {name!r} does not exist at {where} (run: alpha-data db create)"
    if code in ("28P01", "28000"):
        return f"PostgreSQL at {where} rejected the login (check the user and password)"
    return None


def _drop_dead_connections(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool checkout hook: discard a connection whose server side has gone away.

    asyncpg notices a terminated backend (FATAL + EOF) while the connection sits
    idle in the pool, so ``is_closed()`` answers without a round trip; the pool
    then retries with a fresh connection.
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("pooled connection was closed by the server")


def _json_dumps(value: Any) -> str:
    """orjson for JSONB columns (exact, fast); SQLAlchemy wants text."""
    return orjson.dumps(value).decode()
