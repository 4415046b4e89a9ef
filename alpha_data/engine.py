"""Engines and pools built from Settings (what ``Database`` and its router connect with).

One place decides how alpha_data talks to PostgreSQL: pool sizing, JSON codecs,
driver connect arguments (``pgbouncer.connect_args``), and the pool hooks that
drop dead or silent connections.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from alpha_data.observability import sqlhooks
from alpha_data.pgbouncer import connect_args
from alpha_data.settings import Settings

__all__ = ["listen_dsn", "make_engine", "make_outbox_engine"]


def make_engine(settings: Settings, url: str, *, read_only: bool = False) -> AsyncEngine:
    """An engine and pool for ``url`` (the primary or a replica) from Settings.

    ``read_only``: autocommit connections on which every statement runs READ
    ONLY (the read-only pool on the primary: ``Database.read_engine``).
    """
    s = settings
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
    event.listen(engine.sync_engine, "handle_error", _invalidate_on_client_timeout)
    return engine


def make_outbox_engine(settings: Settings) -> AsyncEngine:
    """A small engine of its own for the relay and outbox bookkeeping: it never takes
    the application's pool slots, and its statements are not counted in ``stats()``."""
    s = settings
    return create_async_engine(
        s.database_url,
        pool_size=1,
        max_overflow=2,
        pool_timeout=s.pool_timeout,
        pool_recycle=s.pool_recycle,
        hide_parameters=True,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args=connect_args(s),
    )


def listen_dsn(engine: AsyncEngine, settings: Settings) -> str | None:
    """The asyncpg DSN the outbox relay LISTENs on, or None to poll (PgBouncer)."""
    if settings.pgbouncer_mode:  # LISTEN needs a session; PgBouncer only polls
        return None
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _drop_dead_connections(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool checkout hook: discard a connection whose server side has gone away.

    asyncpg notices a terminated backend (FATAL + EOF) while the connection sits
    idle in the pool, so ``is_closed()`` answers without a round trip; the pool
    then retries with a fresh connection.
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("pooled connection was closed by the server")


def _invalidate_on_client_timeout(context: Any) -> None:
    """A statement that got no reply within asyncpg's ``command_timeout``: drop the connection.

    The network path (or the server) went silent; the connection cannot be
    trusted to answer the next statement either, so it leaves the pool
    instead of being handed out again (SQLAlchemy invalidates on is_disconnect).
    """
    if isinstance(context.original_exception, (TimeoutError, asyncio.TimeoutError)):
        context.is_disconnect = True


def _json_dumps(value: Any) -> str:
    """orjson for JSONB columns (exact, fast); SQLAlchemy wants text."""
    return orjson.dumps(value).decode()
