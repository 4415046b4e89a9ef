"""A database per test run, and a Database isolated in one rolled-back transaction.

Database names are quoted as identifiers by SQLAlchemy's PostgreSQL preparer
(never pasted raw); tables are truncated from the ORM metadata, so an
application's tables are emptied along with the library's.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from alpha_data.database import Database
from alpha_data.models import Base
from alpha_data.settings import Settings
from alpha_data.uow import UnitOfWork

U = TypeVar("U", bound=UnitOfWork)

__all__ = [
    "EXTRA_TABLES",
    "METRICS_TABLE",
    "NO_ENV_FILE",
    "create_database",
    "drop_database",
    "isolated",
    "plain_dsn",
    "run_id",
    "truncate_all",
]

#: Settings built here ignore any .env file of the working directory.
NO_ENV_FILE: dict[str, Any] = {"_env_file": None}

#: The time-series table (partitioned, outside the ORM metadata).
METRICS_TABLE = "alphapulse.metrics"
#: Tables outside the ORM metadata that a test's truncation empties too: the
#: partitioned metrics, the outbox and the per-aggregate event sequences (ids
#: restart, so must the sequences).
EXTRA_TABLES = (METRICS_TABLE, "alphapulse.outbox", "alphapulse.event_sequences")

_PREPARER = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]


def run_id() -> str:
    """A name unique to this run (and pytest-xdist worker)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{uuid.uuid4().hex[:10]}_{worker}"


def plain_dsn(url: str) -> str:
    """``url`` as a libpq DSN for asyncpg (driver name dropped)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(server_url: str, statement: str) -> None:
    conn = await asyncpg.connect(plain_dsn(server_url), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server; return its asyncpg URL."""
    asyncio.run(_admin(server_url, f"CREATE DATABASE {_PREPARER.quote_identifier(name)}"))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (closing its connections) if it exists."""
    quoted = _PREPARER.quote_identifier(name)
    asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))


def _all_tables() -> str:
    names = [_PREPARER.format_table(table) for table in Base.metadata.sorted_tables]
    return ", ".join([*names, *EXTRA_TABLES])


async def truncate_all(database_url: str) -> None:
    """Empty every table of the ORM metadata (library and app) and the metrics table."""
    settings = Settings(database_url=database_url, redis_url="memory://", **NO_ENV_FILE)
    cleaner = Database(settings)
    try:
        async with cleaner.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {_all_tables()} RESTART IDENTITY CASCADE"))
    finally:
        await cleaner.close()


@asynccontextmanager
async def isolated(
    settings: Settings,
    unit_of_work_class: type[U] = UnitOfWork,  # type: ignore[assignment]
) -> AsyncIterator[Database[U]]:
    """A Database whose sessions all run in one outer transaction, rolled back at the end.

    ``uow.commit()`` commits a SAVEPOINT, so code under test behaves as in
    production while nothing it writes outlives the test. ``unit_of_work_class``
    is the app's UnitOfWork subclass, if it has one.
    """
    database = Database(settings, unit_of_work_class=unit_of_work_class)
    async with database.engine.connect() as conn:
        outer = await conn.begin()
        database.use_connection(conn)
        try:
            yield database
        finally:
            if outer.is_active:
                await outer.rollback()
    await database.close()
