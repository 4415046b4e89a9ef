"""Helpers shared by the test suite: per-run database, migrations, statement counting."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parent.parent

#: The server the tests run against (a database per run is created on it).
SERVER_URL = os.environ.get(
    "ALPHA_DATA_TEST_SERVER_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ALPHA_DATA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

ALL_TABLES = (
    "trades",
    "positions",
    "portfolios",
    "api_keys",
    "users",
    "alerts",
    "alphapulse.metrics",  # partitioned: TRUNCATE empties every partition
    "alphapulse.outbox",
    "alphapulse.event_sequences",  # ids restart: so must the per-aggregate sequences
)


def run_id() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{uuid.uuid4().hex[:10]}_{worker}"


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(SERVER_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(name: str) -> str:
    """Create database ``name`` on the test server; return its asyncpg URL."""
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


class StatementCounter:
    """Counts statements sent on an engine (BEGIN/COMMIT excluded)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statements)

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)


@contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[StatementCounter]:
    counter = StatementCounter()
    event.listen(engine.sync_engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", counter)


async def terminate_backend(pid: int) -> None:
    """Kill a PostgreSQL backend from an unrelated connection (fault injection)."""
    conn = await asyncpg.connect(_dsn(SERVER_URL), timeout=5)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


@asynccontextmanager
async def isolated(settings: Any) -> AsyncIterator[Any]:
    """A Database whose sessions all run in one outer transaction, rolled back at the end."""
    from alpha_data import Database

    database = Database(settings)
    async with database.engine.connect() as conn:
        outer = await conn.begin()
        database.use_connection(conn)
        try:
            yield database
        finally:
            if outer.is_active:
                await outer.rollback()
    await database.close()
