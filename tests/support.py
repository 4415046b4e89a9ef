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

_DEFAULT_SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def _test_servers() -> tuple[str, str]:
    """The test server and Redis: configured, the default one, or the embedded pair.

    The embedded servers (alpha_data.embedded) are used when ALPHA_DATA_TEST_EMBEDDED=1, or
    when no ALPHA_DATA_TEST_SERVER_URL is set and nothing answers at the default URL.
    """
    server = os.environ.get("ALPHA_DATA_TEST_SERVER_URL")
    redis_url = os.environ.get("ALPHA_DATA_TEST_REDIS_URL")
    forced = os.environ.get("ALPHA_DATA_TEST_EMBEDDED") == "1"
    if not forced:
        from alpha_data.embedded import server_answers

        if server is not None or server_answers(_DEFAULT_SERVER_URL):
            return server or _DEFAULT_SERVER_URL, redis_url or "redis://127.0.0.1:6379/15"
    from alpha_data.embedded import ensure_servers

    embedded = ensure_servers()
    return embedded.server_url, redis_url or embedded.redis_url.replace("db=0", "db=15")


#: The server the tests run against (a database per run is created on it), and Redis.
SERVER_URL, REDIS_URL = _test_servers()

ALL_TABLES = (
    "trades",
    "positions",
    "portfolios",
    "api_keys",
    "users",
    "alerts",
    "alphapulse.metrics",  # partitioned: TRUNCATE empties every partition
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
