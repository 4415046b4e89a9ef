"""Read replicas: routing, read-your-writes and a replica dying, against a real standby."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal

import asyncpg
import pytest
from sqlalchemy import text

from alpha_data import Database
from alpha_data.services import (
    create_portfolio,
    get_cached_portfolio,
    get_portfolio_with_positions,
    record_trade,
)
from tests.scaleout.components import RedisNode
from tests.scaleout.conftest import PgPair, make_settings

SERVING = text("SELECT pg_is_in_recovery(), inet_server_port()")


async def served_by(db: Database, **kw: object) -> tuple[bool, int]:
    """(in recovery?, port) of the server that runs a read-only unit of work's statements."""
    async with db.unit_of_work(read_only=True, **kw) as uow:  # type: ignore[arg-type]
        row = (await uow.session.execute(SERVING)).one()
    return bool(row[0]), int(row[1])


async def wait_for_replica(db: Database, pg: PgPair, timeout: float = 10.0) -> None:
    """Until a read-only unit of work is served by the replica again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await served_by(db) == (True, pg.replica.port):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("reads did not return to the replica")


async def wait_until_async(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` (the router's background monitor updates it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_read_only_units_of_work_run_on_the_replica(replica_db: Database, pg: PgPair) -> None:
    await wait_for_replica(replica_db, pg)  # the first read waits for the start fence
    for _ in range(5):
        assert await served_by(replica_db) == (True, pg.replica.port)
    # A snapshot transaction can run on a hot standby too ...
    assert await served_by(replica_db, isolation_level="REPEATABLE READ") == (
        True,
        pg.replica.port,
    )
    # ... SERIALIZABLE cannot, so it stays on the primary.
    assert await served_by(replica_db, isolation_level="SERIALIZABLE") == (False, pg.primary.port)


async def test_writes_run_on_the_primary(replica_db: Database, pg: PgPair) -> None:
    async with replica_db.unit_of_work() as uow:
        row = (await uow.session.execute(SERVING)).one()
        await uow.commit()
    assert (bool(row[0]), int(row[1])) == (False, pg.primary.port)
    portfolio = await create_portfolio(replica_db, name="written on the primary")
    conn = await asyncpg.connect(pg.primary.dsn(pg.database))
    try:
        assert await conn.fetchval("SELECT name FROM portfolios WHERE id = $1", portfolio.id)
    finally:
        await conn.close()


async def test_read_your_writes_right_after_commit(replica_db: Database, pg: PgPair) -> None:
    portfolio = await create_portfolio(replica_db, name="ryw")
    for i in range(1, 31):
        await record_trade(
            replica_db,
            portfolio_id=portfolio.id,
            symbol="ACME",
            side="buy",
            quantity=Decimal(1),
            price=Decimal(10),
        )
        fresh = await get_portfolio_with_positions(replica_db, portfolio.id)
        cached = await get_cached_portfolio(replica_db, portfolio.id)
        assert fresh is not None and cached is not None
        assert [p.quantity for p in fresh.positions] == [Decimal(i)]
        assert [p.quantity for p in cached.positions] == [Decimal(i)]
    # Once the replica has replayed the last commit, reads go back to it.
    await wait_for_replica(replica_db, pg, timeout=5)


async def test_read_your_writes_while_the_replica_lags(
    replica_db: Database, pg: PgPair, redis_plain: RedisNode
) -> None:
    """With replay paused the replica misses the commit; this Database still reads it."""
    other = Database(
        make_settings(
            pg.primary_url,
            "memory://",
            replica_urls=[pg.replica_url],
            replica_max_lag=0.5,
            replica_check_interval=0.1,
        )
    )
    standby = await asyncpg.connect(pg.replica.dsn(pg.database))
    try:
        await wait_for_replica(replica_db, pg)
        await wait_for_replica(other, pg)  # past its start fence before replay pauses
        await standby.execute("SELECT pg_wal_replay_pause()")
        portfolio = await create_portfolio(replica_db, name="written while replay is paused")
        # The writer reads its write (from the primary) ...
        for _ in range(3):
            found = await get_portfolio_with_positions(replica_db, portfolio.id)
            assert found is not None and found.name == "written while replay is paused"
            assert await served_by(replica_db) == (False, pg.primary.port)
        # ... while another Database, which did not write, reads the lagging replica ...
        assert await served_by(other) == (True, pg.replica.port)
        assert await get_portfolio_with_positions(other, portfolio.id) is None
        router = replica_db.router
        assert router is not None and router.replicas[0].replay_lsn < router.fence.lsn
        # ... but only until the lag passes its replica_max_lag (0.5 s).
        deadline = time.monotonic() + 5
        while await served_by(other) != (False, pg.primary.port):
            assert time.monotonic() < deadline, "a replica past replica_max_lag kept serving"
            await asyncio.sleep(0.05)
        assert await get_portfolio_with_positions(other, portfolio.id) is not None
    finally:
        await standby.execute("SELECT pg_wal_replay_resume()")
        await standby.close()
        await other.close()
    await wait_for_replica(replica_db, pg)
    found = await get_portfolio_with_positions(replica_db, portfolio.id)
    assert found is not None


async def test_a_dead_replica_leaves_reads_working(
    pg: PgPair, redis_plain: RedisNode, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed (pg_ctl stop -m immediate) before and during reads: no error, a warning."""
    settings = make_settings(
        pg.primary_url,
        redis_plain.url(),
        replica_urls=[pg.replica_url],
        replica_check_interval=0.2,
    )
    caplog.set_level(logging.WARNING, logger="alpha_data.routing")
    async with Database(settings) as db:
        portfolio = await create_portfolio(db, name="survives a replica crash")
        await wait_for_replica(db, pg)
        for _ in range(5):  # pooled connections to the replica exist now
            assert await get_portfolio_with_positions(db, portfolio.id) is not None

        # Killed while a read runs on it: that autocommit read is re-run on the primary.
        async def slow_read() -> tuple[bool, int]:
            async with db.unit_of_work(read_only=True) as uow:
                await uow.session.execute(text("SELECT pg_sleep(0.5)"))
                row = (await uow.session.execute(SERVING)).one()
            return bool(row[0]), int(row[1])

        running = asyncio.create_task(slow_read())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await asyncio.to_thread(pg.replica.stop, "immediate")
        try:
            assert await running == (False, pg.primary.port)
            # Every later read works and is served by the primary.
            for _ in range(20):
                found = await get_portfolio_with_positions(db, portfolio.id)
                assert found is not None and found.name == "survives a replica crash"
                assert await get_cached_portfolio(db, portfolio.id) is not None
                assert await served_by(db) == (False, pg.primary.port)
            warnings = [r for r in caplog.records if r.name == "alpha_data.routing"]
            assert any("unavailable" in r.getMessage() for r in warnings)
            assert db.router is not None and not db.router.replicas[0].healthy
            # A Database started now reads nothing from the replica before its monitor
            # has probed it (start fence): the primary answers, the probe finds it down.
            async with Database(settings) as fresh:
                assert fresh.router is not None
                found = await get_portfolio_with_positions(fresh, portfolio.id)
                assert found is not None
                assert await served_by(fresh) == (False, pg.primary.port)
                await wait_until_async(lambda: not fresh.router.replicas[0].healthy)
                assert fresh.router.fallbacks == 0
        finally:
            await asyncio.to_thread(pg.replica.start)
        # The monitor probes it again (back-off) and reads return to it.
        await wait_for_replica(db, pg, timeout=20)
        assert time.monotonic() - started < 30
        assert db.router.replicas[0].healthy
