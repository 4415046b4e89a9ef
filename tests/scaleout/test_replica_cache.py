"""Issue 21 item 4: the cache fills from misses served by a real streaming replica, safely.

* Read-heavy load on the replica: every row's first read is a miss served by
  the replica and stored; the reads after it are hits.
* Replay paused, a second *process* (a Database of its own) changes a row:
  the reader's misses are served by the lagging replica (old value, within
  the staleness bound) and are never stored, so no reader anywhere gets the
  old value from the cache; once replay resumes the replica's answer is
  stored again.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from alpha_data import Database, Settings
from alpha_data.testing.factories import UserFactory
from tests.scaleout.components import RedisNode
from tests.scaleout.conftest import PgPair, make_settings

ROOT = Path(__file__).resolve().parents[2]

#: A second process: its own Database (same settings), one committed change of a user.
WRITER = """
import asyncio, json, sys
from alpha_data import Database, Settings

async def main() -> None:
    values, user_id, email = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    async with Database(Settings(_env_file=None, **values)) as db:
        async with db.unit_of_work() as uow:
            user = await uow.users.get(user_id, cached=False)
            user.email = email
            await uow.commit()

asyncio.run(main())
"""


async def write_in_another_process(settings: Settings, user_id: int, email: str) -> None:
    names = ("database_url", "redis_url", "cache_prefix", "replica_urls")
    values = {name: getattr(settings, name) for name in names}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        json.dumps(values),
        str(user_id),
        email,
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]


@pytest.fixture
async def reader(pg: PgPair, redis_plain: RedisNode) -> AsyncIterator[Database]:
    settings = make_settings(pg.primary_url, redis_plain.url(), replica_urls=[pg.replica_url])
    async with Database(settings) as db:
        # A new prefix has no fence: the first invalidation creates it, the next one
        # confirms it (else the first refused replica store would), so the tests
        # below see the steady state from their first read.
        await add_users(db, 2, one_by_one=True)
        yield db
    conn = await asyncpg.connect(pg.primary.dsn(pg.database))
    try:
        await conn.execute("DELETE FROM users WHERE username LIKE 'rc-%'")
    finally:
        await conn.close()


async def until(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def email_on_replica(db: Database, user_id: int) -> tuple[str, bool]:
    """A cached read in a read-only unit of work: (email, was it a miss served by the replica?)."""
    assert db.router is not None
    served = db.router.replicas[0].served
    async with db.unit_of_work(read_only=True) as uow:
        user = await uow.users.get(user_id)
        assert user is not None
        email = user.email
    await db.cache.drain()
    return email, db.router.replicas[0].served > served


async def reaches_replica(db: Database) -> bool:
    """True when a read-only unit of work runs on the replica now (past the fence)."""
    async with db.unit_of_work(read_only=True) as uow:
        return bool((await uow.session.execute(text("SELECT pg_is_in_recovery()"))).scalar())


async def add_users(db: Database, count: int, *, one_by_one: bool = False) -> list[int]:
    """Add ``count`` users in one commit (or one commit each)."""
    ids: list[int] = []
    for batch in [[i] for i in range(count)] if one_by_one else [list(range(count))]:
        async with db.unit_of_work() as uow:
            for i in batch:
                name = f"rc-{i}-{time.time_ns()}"
                ids.append((await uow.users.add(UserFactory.build(username=name))).id)
            await uow.commit()
    return ids


async def test_replica_misses_fill_the_cache(reader: Database) -> None:
    ids = await add_users(reader, 40)
    assert reader.router is not None
    await until(lambda: reaches_replica(reader), "reads to reach the replica")
    before = reader.cache.stats()
    served = reader.router.replicas[0].served
    for _ in range(5):
        for user_id in ids:
            await email_on_replica(reader, user_id)
    stats = reader.cache.stats()
    hits, misses = stats.hits - before.hits, stats.misses - before.misses
    from_replica = reader.router.replicas[0].served - served
    print(
        f"\n200 reads of 40 users on the replica: {hits} hits, {misses} misses "
        f"({from_replica} served by the replica), {stats.stores - before.stores} stored"
    )
    assert misses == 40 and hits == 160  # each row's first read only
    assert from_replica == misses  # the misses were the replica's, and they were stored


async def test_a_lagging_replica_never_leaves_an_old_row_in_the_cache(
    reader: Database, standby: asyncpg.Connection
) -> None:
    (user_id,) = await add_users(reader, 1)
    assert reader.router is not None
    await until(lambda: reaches_replica(reader), "reads to reach the replica")
    first, missed_on_replica = await email_on_replica(reader, user_id)
    assert missed_on_replica and reader.cache.stats().stores == 1  # served there, stored
    assert (await email_on_replica(reader, user_id)) == (first, False)  # a hit
    await standby.execute("SELECT pg_wal_replay_pause()")
    await write_in_another_process(reader.settings, user_id, "new@x.io")
    uncovered = reader.cache.stats().replica_uncovered
    stores = reader.cache.stats().stores
    stale = 0
    for _ in range(10):  # the replica is within the staleness bound: it may answer
        email, missed_on_replica = await email_on_replica(reader, user_id)
        assert missed_on_replica  # the tag moved: never the entry stored before
        stale += email != "new@x.io"
    assert stale == 10  # replay is paused: the replica had the old row
    stats = reader.cache.stats()
    assert stats.stores == stores and stats.replica_uncovered >= uncovered + 10
    # No reader, on any route, gets the old value from the cache.
    async with reader.unit_of_work() as uow:
        assert (await uow.users.get(user_id)).email == "new@x.io"
    await standby.execute("SELECT pg_wal_replay_resume()")
    # With replay running, the next change is stored from the replica once it shows it.
    await write_in_another_process(reader.settings, user_id, "newer@x.io")
    committed = time.monotonic()
    stores = reader.cache.stats().stores

    async def fresh_and_stored() -> bool:
        email, missed_on_replica = await email_on_replica(reader, user_id)
        assert email == "newer@x.io" or missed_on_replica  # older only from the replica itself
        stored = reader.cache.stats().stores > stores
        return email == "newer@x.io" and missed_on_replica and stored

    await until(fresh_and_stored, "the replica's answer to be stored")
    took = time.monotonic() - committed
    print(f"\nanother process's change stored from the replica {took:.3f} s after its commit")
    async with reader.unit_of_work(read_only=True) as uow:
        hits = reader.cache.stats().hits
        assert (await uow.users.get(user_id)).email == "newer@x.io"
        assert reader.cache.stats().hits == hits + 1
