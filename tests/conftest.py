"""Fixtures: one database per test run (migrated with Alembic), isolated tests.

* ``db``: a Database whose sessions all run inside one outer transaction that
  is rolled back after the test (``uow.commit()`` commits a SAVEPOINT).
* ``real_db``: a Database on the real pool, for concurrency/fault tests; the
  tables are truncated afterwards.
Each test gets its own Redis key prefix; the run's keys are deleted at the end.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as redis_asyncio
from sqlalchemy import text

from alpha_data import Database, Settings
from tests.support import (
    ALL_TABLES,
    REDIS_URL,
    create_database,
    drop_database,
    isolated,
    migrate,
    run_id,
)

_counter = itertools.count()


@pytest.fixture(scope="session")
def run_name() -> str:
    return run_id()


@pytest.fixture(scope="session")
def database_url(run_name: str) -> Iterator[str]:
    name = f"alpha_test_{run_name}"
    url = create_database(name)
    try:
        migrate(url)
        yield url
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
async def _redis_cleanup(run_name: str) -> AsyncIterator[None]:
    yield
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        async for key in client.scan_iter(match=f"t{run_name}:*", count=500):
            await client.unlink(key)
    finally:
        await client.aclose()


@pytest.fixture
def settings(database_url: str, run_name: str, _redis_cleanup: None) -> Settings:
    """Settings of this test: the run's database and a Redis prefix of its own."""
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        cache_prefix=f"t{run_name}:{next(_counter)}",
        pool_size=5,
        max_overflow=2,
        pool_timeout=5,
        connect_timeout=5,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """Database isolated by an outer transaction rolled back at the end."""
    async with isolated(settings) as database:
        yield database


@pytest.fixture
async def real_db(settings: Settings) -> AsyncIterator[Database]:
    """Database on its real pool (separate connections); tables truncated afterwards."""
    database = Database(settings)
    await database.connect()
    try:
        yield database
    finally:
        await database.close()
        cleaner = Database(settings)
        async with cleaner.engine.begin() as conn:
            tables = ", ".join(ALL_TABLES)
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await cleaner.close()
