"""Database: the engine and pool, session factory, Redis client, health and retry."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar
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
from alpha_data.errors import DatabaseUnavailableError, TransientError, is_retryable, sqlstate_of
from alpha_data.events import EventBus
from alpha_data.health import ComponentHealth
from alpha_data.settings import Settings
from alpha_data.uow import IsolationLevel, ReadOnlySession, UnitOfWork

__all__ = ["ComponentHealth", "Database", "Health"]

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

    @property
    def ok(self) -> bool:
        """True when PostgreSQL is reachable (a degraded cache still serves)."""
        return self.status != "down"


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with full jitter for the given (1-based) attempt."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))  # noqa: S311


class Database:
    """Owns everything that talks to PostgreSQL and Redis; create one per application.

    ``async with Database(settings) as db:`` connects and closes.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        s = self.settings
        self.engine: AsyncEngine = create_async_engine(
            s.database_url,
            pool_size=s.pool_size,
            max_overflow=s.max_overflow,
            pool_timeout=s.pool_timeout,
            pool_recycle=s.pool_recycle,
            # SQLAlchemy's pre-ping costs BEGIN + ping + ROLLBACK per checkout;
            # _drop_dead_connections (below) finds killed backends for free.
            pool_pre_ping=False,
            echo=s.echo,
            hide_parameters=True,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={
                "timeout": s.connect_timeout,
                "server_settings": {
                    "application_name": "alpha_data",
                    "statement_timeout": str(int(s.statement_timeout * 1000)),
                },
            },
        )
        if s.pool_pre_ping:
            event.listen(self.engine.sync_engine.pool, "checkout", _drop_dead_connections)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"),
            expire_on_commit=False,
            sync_session_class=ReadOnlySession,
            autoflush=False,
        )
        self._isolated: dict[tuple[str, bool], async_sessionmaker[AsyncSession]] = {}
        self.cache: Cache = Cache(
            make_cache_backend(s),
            prefix=s.cache_prefix,
            ttl=s.cache_ttl,
            negative_ttl=s.cache_negative_ttl,
            enabled=s.cache_enabled,
        )
        self.events = EventBus(self.cache.backend, prefix=s.cache_prefix)
        self._closed = False

    def __repr__(self) -> str:
        return f"Database({self.settings.safe_database_url!r})"

    @property
    def redis(self) -> Any:
        """The redis-py asyncio client, or None when ``redis_url`` is ``memory://``."""
        return self.cache.backend.client

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> Database:
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
        if not await self.cache.backend.ping():
            log.warning("cache backend unreachable at start-up; running without cache")

    async def close(self) -> None:
        """Dispose the pool and close Redis; the Database cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        await self.events.close()
        await self.cache.close()
        await self.engine.dispose()

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
        self._sessions = async_sessionmaker(**kw)
        self._read_sessions = async_sessionmaker(**kw, sync_session_class=ReadOnlySession)
        self._isolated = {
            (level, ro): self._read_sessions if ro else self._sessions
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
            return self._read_sessions if read_only else self._sessions
        key = (isolation_level, read_only)
        factory = self._isolated.get(key)
        if factory is None:
            engine = self.engine.execution_options(
                isolation_level=isolation_level, postgresql_readonly=read_only
            )
            factory = async_sessionmaker(
                engine,
                expire_on_commit=False,
                sync_session_class=ReadOnlySession if read_only else None,
            )
            self._isolated[key] = factory
        return factory

    def unit_of_work(
        self, *, read_only: bool = False, isolation_level: IsolationLevel | None = None
    ) -> UnitOfWork:
        """A new UnitOfWork: one session, one transaction, its repositories.

        ``read_only=True`` refuses writes and, at the default isolation, runs
        each read in autocommit (no BEGIN/COMMIT round trips).
        """
        return UnitOfWork(
            self._session_factory(isolation_level, read_only),
            read_only=read_only,
            cache=self.cache,
            events=self.events,
        )

    async def run(
        self,
        fn: Callable[[UnitOfWork], Awaitable[T]],
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
                async with self.unit_of_work(isolation_level=isolation_level) as uow:
                    result = await fn(uow)
                    await uow.commit()
                return result
            except TransientError as exc:
                retry = is_retryable(exc) or (idempotent and exc.outcome_unknown)
                if not retry:
                    raise
                if attempt >= attempts:
                    raise TransientError(
                        f"gave up after {attempts} attempts: {exc.message}",
                        sqlstate=exc.sqlstate,
                    ) from exc
                delay = backoff_delay(attempt)
                log.info(
                    "retrying transaction",
                    extra={"attempt": attempt, "sqlstate": exc.sqlstate, "backoff_s": delay},
                )
                await asyncio.sleep(delay)

    # -- health --------------------------------------------------------------

    async def _server_version(self) -> str:
        async with self.engine.connect() as conn:
            return str((await conn.execute(text("SHOW server_version"))).scalar_one())

    def pool_status(self) -> dict[str, int]:
        """Size, checked-out and overflow counts of the connection pool."""
        pool: Any = self.engine.pool
        out: dict[str, int] = {}
        for name in ("size", "checkedout", "overflow", "checkedin"):
            method = getattr(pool, name, None)
            if callable(method):
                out[name] = int(method())
        return out

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
        cache = await self.cache.health()
        if not database.ok:
            status: Literal["ok", "degraded", "down"] = "down"
        elif not cache.ok:
            status = "degraded"
        else:
            status = "ok"
        return Health(status=status, database=database, cache=cache, pool=self.pool_status())


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
