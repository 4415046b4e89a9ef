"""Issue 21: replica reads bounded from the first read, for any settings, read-only everywhere.

The replica lags on purpose (``pg_wal_replay_pause()``); another writer
commits marker rows straight to the primary. A *staleness window* is the
time from a marker's COMMIT returning until the last read that was served by
the replica and did not see it (measured on this host's monotonic clock; the
read's time is taken before the unit of work starts). The router promises
``window <= replica_max_lag``: it checks the lag bound when it chooses the
route, after that time was taken, and it counts lag from before the commit.
The windows are printed (run with ``-s``) for docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from alpha_data import Database
from alpha_data.errors import ReadOnlyError
from tests.scaleout.components import RedisNode
from tests.scaleout.conftest import PgPair, make_settings

PROBE = text("SELECT pg_is_in_recovery(), EXISTS (SELECT 1 FROM users WHERE username = :name)")


async def read(db: Database, marker: str) -> tuple[bool, bool]:
    """(served by the replica?, marker visible?) of one read-only unit of work."""
    async with db.unit_of_work(read_only=True) as uow:
        row = (await uow.session.execute(PROBE, {"name": marker})).one()
    return bool(row[0]), bool(row[1])


@pytest.fixture
async def primary(pg: PgPair) -> AsyncIterator[asyncpg.Connection]:
    """A writer that is not an alpha_data Database (another process, as far as routing knows)."""
    conn = await asyncpg.connect(pg.primary.dsn(pg.database))
    try:
        yield conn
    finally:
        await conn.execute("DELETE FROM users WHERE username LIKE 'mark-%'")
        await conn.close()


async def poll(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` every 5 ms for up to 10 s."""
    for _ in range(2000):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def pause(standby: asyncpg.Connection) -> None:
    await standby.execute("SELECT pg_wal_replay_pause()")

    async def paused() -> bool:
        return await standby.fetchval("SELECT pg_get_wal_replay_pause_state()") == "paused"

    await poll(paused, "replay to pause")


async def count(conn: asyncpg.Connection, name: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM users WHERE username = $1", name))


async def commit_marker(primary: asyncpg.Connection) -> tuple[str, float]:
    """Commit a marker row; its name and the time COMMIT returned."""
    marker = f"mark-{uuid.uuid4().hex[:12]}"
    await primary.execute(
        "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'x')",
        marker,
        f"{marker}@x.io",
    )
    return marker, time.monotonic()


async def caught_up(db: Database, timeout: float = 10.0) -> None:
    """Until a read of ``db`` is served by the replica (past its start fence)."""
    deadline = time.monotonic() + timeout
    while not (await read(db, "nobody"))[0]:
        assert time.monotonic() < deadline, "reads never reached the replica"
        await asyncio.sleep(0.01)


def settings_for(pg: PgPair, redis: RedisNode, **kw: Any) -> Any:
    return make_settings(pg.primary_url, redis.url(), replica_urls=[pg.replica_url], **kw)


async def test_a_database_started_while_the_replica_lags_waits_for_it(
    pg: PgPair,
    redis_plain: RedisNode,
    primary: asyncpg.Connection,
    standby: asyncpg.Connection,
) -> None:
    """Issue 21 item 1: defaults (max_lag 10 s); a new Database never reads the stale replica."""
    seen, _ = await commit_marker(primary)  # replayed: the replica knows a commit time

    async def replayed() -> bool:
        return await count(standby, seen) == 1

    await poll(replayed, "the replica to replay a commit")
    await pause(standby)
    marker, committed = await commit_marker(primary)
    await asyncio.sleep(1.0)  # the replica is now > 1 s behind, well within max_lag
    async with Database(settings_for(pg, redis_plain)) as fresh:
        assert fresh.router is not None
        reads = 0
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            on_replica, visible = await read(fresh, marker)
            assert not on_replica and visible  # the primary, which has the marker
            reads += 1
            await asyncio.sleep(0.02)
        # Honest lag: at least the age of the commit the replica misses.
        before = time.monotonic()
        status = fresh.router.status()[0]
        assert status["lag_s"] is not None and status["lag_s"] >= before - committed
        print(
            f"\nfresh Database, paused replica: {reads} reads, all on the primary; "
            f"status lag {status['lag_s']:.3f} s, true >= {before - committed:.3f} s"
        )
        await standby.execute("SELECT pg_wal_replay_resume()")
        resumed = time.monotonic()
        await caught_up(fresh)
        print(f"reads back on the replica {time.monotonic() - resumed:.3f} s after resume")
        assert (await read(fresh, marker)) == (True, True)


@pytest.mark.parametrize(("max_lag", "interval"), [(1.5, 1.0), (0.5, 1.0), (1.0, 0.3)])
async def test_staleness_windows_stay_within_max_lag(
    pg: PgPair,
    redis_plain: RedisNode,
    primary: asyncpg.Connection,
    standby: asyncpg.Connection,
    max_lag: float,
    interval: float,
) -> None:
    """Issue 21 item 2: max_lag not a multiple of the check interval; the bound still holds."""
    settings = settings_for(
        pg, redis_plain, replica_max_lag=max_lag, replica_check_interval=interval
    )
    windows: list[float] = []
    async with Database(settings) as db:
        for _ in range(8):
            await caught_up(db)
            await pause(standby)
            marker, committed = await commit_marker(primary)
            last_stale = None
            while True:
                at = time.monotonic()
                on_replica, visible = await read(db, marker)
                if on_replica and not visible:
                    last_stale = at
                elif not on_replica:
                    break  # the router dropped the replica
                assert at - committed < max_lag + 10, "the lagging replica kept serving"
                await asyncio.sleep(0.005)
            assert last_stale is not None, "the replica served nothing while it lagged"
            windows.append(last_stale - committed)
            await standby.execute("SELECT pg_wal_replay_resume()")
    print(
        f"\nmax_lag {max_lag} s, interval {interval} s: staleness windows "
        + ", ".join(f"{w:.3f}" for w in windows)
    )
    assert max(windows) <= max_lag


async def test_read_only_is_read_only_on_both_routes(
    pg: PgPair,
    redis_plain: RedisNode,
    primary: asyncpg.Connection,
    standby: asyncpg.Connection,
) -> None:
    """Issue 21 item 3: a raw INSERT in a read-only unit of work fails alike everywhere."""
    insert = text("INSERT INTO users (username, email, password_hash) VALUES (:n, :e, 'x')")
    async with Database(settings_for(pg, redis_plain)) as db:
        await caught_up(db)
        routes = []
        for attempt in ("replica", "primary"):
            if attempt == "primary":  # a commit of this Database with replay paused
                await pause(standby)
                await commit_marker(primary)  # WAL the replica has not replayed
                async with db.unit_of_work() as uow:
                    await uow.session.execute(text("SELECT 1"))
                    await uow.commit()
            name = f"mark-ro-{attempt}"
            with pytest.raises(ReadOnlyError):
                async with db.unit_of_work(read_only=True) as uow:
                    on_replica = (await uow.session.execute(PROBE, {"name": "x"})).one()[0]
                    routes.append(bool(on_replica))
                    await uow.session.execute(insert, {"n": name, "e": f"{name}@x.io"})
            assert await count(primary, name) == 0
        assert routes == [True, False]
