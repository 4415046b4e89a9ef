"""The session factories of one Database: which factory a unit of work gets.

Read-write and read-only factories are built up front, one per isolation
level on first use; ``use_connection`` swaps them all for factories joined
to one outer transaction (test isolation). Read-only factories route to
replicas when a Router is set, and run READ ONLY on the primary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from alpha_data.routing import Router, primary_read_options, session_options
from alpha_data.uow import DataSession, IsolationLevel, ReadOnlySession

__all__ = ["SessionFactories"]


class SessionFactories:
    """Session factories on ``engine`` (routed by ``router`` if set), keyed by how they read."""

    def __init__(
        self,
        engine: AsyncEngine,
        router: Router | None,
        read_engine: Callable[[], AsyncEngine | None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.router = router
        #: The read-only pool on the primary (built on first use; None in pgbouncer_mode).
        self._read_engine = read_engine
        self._sessions = self._make_sessions(read_only=False)
        self._read_sessions: async_sessionmaker[AsyncSession] | None = None
        self._isolated: dict[tuple[str, bool], async_sessionmaker[AsyncSession]] = {}

    def use_connection(self, connection: AsyncConnection) -> None:
        """Route every session through ``connection`` (see ``Database.use_connection``)."""
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
        """A bare AsyncSession of the read-write factory."""
        return self._sessions()

    def factory(
        self, isolation_level: IsolationLevel | None, read_only: bool
    ) -> async_sessionmaker[AsyncSession]:
        """The factory of a unit of work with this isolation level and access mode."""
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
            read_engine = self._read_engine()
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
