"""Fixtures of the scale-out proof: real replicas, PgBouncer and Redis Sentinel.

Started once per run on free loopback ports in one temporary directory and
stopped at the end (also when the run fails or is interrupted):

* ``pg``: a primary (initdb) with the schema migrated, and a streaming hot
  standby of it (pg_basebackup -R).
* ``bouncer``: PgBouncer in transaction pooling mode in front of the primary.
* ``redis_plain``: a standalone redis-server for the cache of most tests.
* ``sentinel``: a Redis master, its replica and one Sentinel watching them.

These tests run only when ``tests/scaleout`` is named on the command line
(``pytest tests/scaleout``); a plain ``pytest`` skips them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis_asyncio

from alpha_data import Database, Settings
from alpha_data.security import use_password_hasher
from alpha_data.testing import FAST_HASHER
from tests.scaleout.components import (
    Components,
    PgBouncer,
    PgNode,
    RedisNode,
    Sentinel,
    start_primary,
    start_replica,
    wait_until,
)
from tests.support import migrate

HERE = Path(__file__).resolve().parent
DATABASE = "alpha_scaleout"
SERVICE = "alpha"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this directory unless the command line names it (it starts its own servers)."""
    named = any(
        str(HERE) == str(Path(arg.split("::")[0]).resolve())
        or HERE in Path(arg.split("::")[0]).resolve().parents
        for arg in config.args
    )
    if named:
        return
    skip = pytest.mark.skip(reason="scale-out proof: run `pytest tests/scaleout`")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@dataclass
class PgPair:
    """The primary, its streaming replica and the migrated database on both."""

    primary: PgNode
    replica: PgNode
    database: str

    @property
    def primary_url(self) -> str:
        """asyncpg URL of the database on the primary."""
        return self.primary.url(self.database)

    @property
    def replica_url(self) -> str:
        """asyncpg URL of the database on the replica."""
        return self.replica.url(self.database)


@pytest.fixture(scope="session")
def components() -> Iterator[Components]:
    env = Components()
    try:
        yield env
    finally:
        env.close()


@pytest.fixture(scope="session")
def pg(components: Components) -> PgPair:
    primary = start_primary(components)

    async def create() -> None:
        conn = await asyncpg.connect(primary.dsn(), timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()

    asyncio.run(create())
    migrate(primary.url(DATABASE))
    replica = start_replica(components, primary)
    return PgPair(primary, replica, DATABASE)


@pytest.fixture(scope="session")
def bouncer(components: Components, pg: PgPair) -> PgBouncer:
    return PgBouncer(components, pg.primary, pg.database, pool_size=4)


@pytest.fixture(scope="session")
def redis_plain(components: Components) -> RedisNode:
    return RedisNode(components, "redis-plain")


@dataclass
class SentinelSet:
    """A Redis master, its replica and the Sentinel watching them."""

    master: RedisNode
    replica: RedisNode
    sentinel: Sentinel


@pytest.fixture(scope="session")
def sentinel(components: Components) -> SentinelSet:
    master = RedisNode(components, "redis-master")
    replica = RedisNode(components, "redis-replica", replica_of=master)

    def replica_online() -> bool:
        async def ask() -> bool:
            client = redis_asyncio.Redis(host="127.0.0.1", port=master.port)
            try:
                info = await client.info("replication")
            finally:
                await client.aclose()
            return "online" in str(info.get("slave0", ""))

        return asyncio.run(ask())

    # Started after the replica is in sync, the Sentinel sees it in its first INFO.
    wait_until(replica_online, 30, "the Redis replica to sync", interval=0.05)
    watcher = Sentinel(components, master, SERVICE)

    def replica_known() -> bool:
        async def ask() -> bool:
            client = redis_asyncio.Redis(host="127.0.0.1", port=watcher.port)
            try:
                replicas: list[dict[str, Any]] = await client.sentinel_slaves(SERVICE)
            finally:
                await client.aclose()
            return any(
                r.get("master-link-status") == "ok" and "s_down" not in r.get("flags", "")
                for r in replicas
            )

        return asyncio.run(ask())

    wait_until(replica_known, 30, "the sentinel to see a synced replica", interval=0.2)
    return SentinelSet(master, replica, watcher)


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    with use_password_hasher(FAST_HASHER):
        yield


def make_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings of one test: its own cache prefix, small pools, no .env."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "cache_prefix": f"so{uuid.uuid4().hex[:8]}",
        "pool_size": 5,
        "max_overflow": 5,
        "pool_timeout": 10,
        "connect_timeout": 5,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def standby(pg: PgPair) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the replica; replay is resumed whatever the test did."""
    conn = await asyncpg.connect(pg.replica.dsn(pg.database))
    try:
        yield conn
    finally:
        await conn.execute("SELECT pg_wal_replay_resume()")
        await conn.close()


@pytest.fixture
async def replica_db(pg: PgPair, redis_plain: RedisNode) -> AsyncIterator[Database]:
    """A Database with the primary, the replica and a real Redis cache."""
    settings = make_settings(pg.primary_url, redis_plain.url(), replica_urls=[pg.replica_url])
    async with Database(settings) as db:
        yield db
