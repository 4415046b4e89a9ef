"""Database: the facade that wires engine, sessions, cache, events and outbox together.

Each job lives in a module of its own; ``Database`` builds the pieces from
Settings and delegates: ``alpha_data.engine`` (engines and pools),
``alpha_data.sessions`` (session factories), ``alpha_data.retry`` (connect
backoff, the ``run`` retry loop), ``alpha_data.status`` (``health()``,
``stats()``, ``pool_status()``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from alpha_data import status
from alpha_data.cache import Cache, make_cache_backend
from alpha_data.engine import listen_dsn, make_engine, make_outbox_engine
from alpha_data.events import EventBus
from alpha_data.health import ComponentHealth
from alpha_data.observability import sqlhooks
from alpha_data.observability.stats import Counters, Stats
from alpha_data.outbox import Outbox, Relay
from alpha_data.pgbouncer import check_statement_timeout
from alpha_data.redisio.client import is_cluster
from alpha_data.repositories.rules import register_rules
from alpha_data.retry import backoff_delay as backoff_delay  # its import path before retry.py
from alpha_data.retry import run_with_retries, wait_for_server
from alpha_data.routing import Router
from alpha_data.sessions import SessionFactories
from alpha_data.settings import Settings
from alpha_data.status import Health
from alpha_data.uow import IsolationLevel, UnitOfWork

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
        self.engine: AsyncEngine = make_engine(s, s.database_url)
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
        self._factories = SessionFactories(self.engine, self.router, self._read_only_engine)
        backend = make_cache_backend(s)
        self.cache: Cache = Cache(
            backend,
            # On Redis Cluster every key of a deployment shares one hash slot
            # (a read's entry and tag tokens go in one MGET/script/MULTI).
            prefix=f"{{{s.cache_prefix}}}" if is_cluster(backend.client) else s.cache_prefix,
            ttl=s.cache_ttl,
            negative_ttl=s.cache_negative_ttl,
            enabled=s.cache_enabled,
            # With replicas, invalidations carry the primary's WAL position, so
            # misses served by replicas can be stored (docs/caching.md).
            commit_lsn=self.router.commit_lsn if self.router is not None else None,
        )
        self.events = EventBus(
            self.cache.backend, prefix=s.cache_prefix, stream_maxlen=s.event_stream_maxlen
        )
        #: After-commit effects written in each transaction (alpha_data.outbox).
        self.outbox = Outbox(make_outbox_engine(s), self.cache, self.events, s.outbox_grace)
        self.relay: Relay | None = None
        self._closed = False

    @property
    def read_engine(self) -> AsyncEngine | None:
        """The read-only pool on the primary, once a read-only unit of work has used it.

        Read-only units of work (``read_only=True``, no isolation level) on the
        primary use autocommit connections opened with
        ``default_transaction_read_only=on``: a read costs one round trip and a
        raw write still fails with ReadOnlyError. Sized like the main pool; its
        statements run ``db.engine``'s engine events. None in ``pgbouncer_mode``
        (startup parameters do not reach the server there).
        """
        return self._read_engine

    def _read_only_engine(self) -> AsyncEngine | None:
        if self.settings.pgbouncer_mode:
            return None
        engine = self._read_engine
        if engine is None:
            engine = make_engine(self.settings, self.settings.database_url, read_only=True)
            sqlhooks.share_events(engine, self.engine, self.counters)
            self._read_engine = engine
        return engine

    def _replica_engine(self, url: str) -> AsyncEngine:
        engine = make_engine(self.settings, url)
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

    async def connect(self) -> None:
        """Wait until PostgreSQL answers, retrying with backoff until ``connect_timeout``.

        Raises DatabaseUnavailableError naming host and port. Redis is only
        probed: an unreachable cache is logged and the layer runs without it.
        """
        await wait_for_server(
            lambda: status.server_version(self.engine),
            timeout=self.settings.connect_timeout,
            url=self.settings.database_url,
        )
        if self.settings.pgbouncer_mode:
            await check_statement_timeout(self.engine, self.settings)
        if self.cache.enabled and not await self.cache.backend.ping():
            log.warning("cache backend unreachable at start-up; running without cache")
        if self.settings.outbox_relay:
            self.start_relay()

    def start_relay(self) -> Relay:
        """Run the outbox relay of this cache prefix in the background (``connect`` does,
        unless ``outbox_relay`` is off; ``alpha-data relay`` runs only this)."""
        if self.relay is None:
            s = self.settings
            self.relay = Relay(
                self.outbox,
                dsn=listen_dsn(self.engine, s),
                batch=s.outbox_batch,
                poll_interval=s.outbox_poll_interval,
            )
            self.relay.start()
        return self.relay

    async def close(self) -> None:
        """Dispose the pool and close Redis; the Database cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        if self.relay is not None:
            await self.relay.stop()
        await self.outbox.close()
        await self.outbox.engine.dispose()
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
        self._factories.use_connection(connection)

    def session(self) -> AsyncSession:
        """A bare AsyncSession (``expire_on_commit=False``) for code that needs one."""
        return self._factories.session()

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
            self._factories.factory(isolation_level, read_only),
            read_only=read_only,
            cache=self.cache,
            events=self.events,
            # A snapshot or serializable transaction must read what PostgreSQL
            # shows it (and let SSI see the reads); it still invalidates.
            cache_reads=isolation_level in (None, "READ COMMITTED"),
            counters=self.counters,
            outbox=self.outbox,
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
        return await run_with_retries(
            lambda: self.unit_of_work(isolation_level=isolation_level),
            fn,
            attempts=attempts,
            idempotent=idempotent,
            counters=self.counters,
        )

    # -- health --------------------------------------------------------------

    def pool_status(self) -> dict[str, int]:
        """Size, checked-out and overflow counts of the connection pool, and its waits."""
        return status.pool_status(
            self.engine, self.settings.max_overflow, self.counters, self._read_engine
        )

    def stats(self) -> Stats:
        """A typed snapshot of pool, unit-of-work, statement, cache and event counters.

        Counts run from the creation of this Database (see docs/operations.md);
        the pool's size, checked-out and overflow numbers are live. Cheap and
        synchronous: no I/O.
        """
        return status.stats(self)

    async def health(self) -> Health:
        """Round-trip PostgreSQL and the cache; never raises."""
        return await status.health(self)
