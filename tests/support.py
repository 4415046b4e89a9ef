"""Helpers shared by the test suite: per-run database, migrations, statement counting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from alpha_data.migrations_support import library_config, upgrade_library
from alpha_data.testing import databases as testing_databases
from alpha_data.testing.databases import EXTRA_TABLES, isolated, plain_dsn, run_id
from alpha_data.testing.servers import resolve_servers

__all__ = [
    "ALL_TABLES",
    "REDIS_URL",
    "ROOT",
    "SERVER_URL",
    "StatementCounter",
    "alembic_config",
    "count_statements",
    "create_database",
    "drop_database",
    "isolated",
    "migrate",
    "run_id",
    "terminate_backend",
]

ROOT = Path(__file__).resolve().parent.parent

#: The servers the tests run against (a database per run is created on SERVER_URL).
SERVER_URL = resolve_servers().postgres_url
REDIS_URL = resolve_servers().redis_url

#: Every table, for TRUNCATE (the metrics table is partitioned: TRUNCATE empties them all).
ALL_TABLES = (
    "trades",
    "positions",
    "portfolios",
    "api_keys",
    "users",
    "alerts",
    *EXTRA_TABLES,
)


def create_database(name: str) -> str:
    """Create database ``name`` on the test server; return its asyncpg URL."""
    return testing_databases.create_database(SERVER_URL, name)


def drop_database(name: str) -> None:
    testing_databases.drop_database(SERVER_URL, name)


def alembic_config(url: str) -> Config:
    return library_config(url)


def migrate(url: str, revision: str = "head") -> None:
    upgrade_library(url, revision)


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
    conn = await asyncpg.connect(plain_dsn(SERVER_URL), timeout=5)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()
