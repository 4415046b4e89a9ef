"""Redis Sentinel: the cache follows the master through a failover, callers see no error."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import redis.asyncio as redis_asyncio

from alpha_data import Database
from alpha_data.services import create_portfolio, get_cached_portfolio, record_trade
from tests.scaleout.conftest import SERVICE, PgPair, SentinelSet, make_settings


async def master_port(db: Database) -> int:
    """The port of the Redis node the Database's client talks to."""
    config = await db.redis.config_get("port")
    return int(config["port"])


async def sentinel_master_port(sentinel: SentinelSet) -> int:
    client = redis_asyncio.Redis(host="127.0.0.1", port=sentinel.sentinel.port)
    try:
        _, port = await client.sentinel_get_master_addr_by_name(SERVICE)
    finally:
        await client.aclose()
    return int(port)


async def test_sentinel_url_reaches_the_master(sentinel: SentinelSet, pg: PgPair) -> None:
    async with Database(make_settings(pg.primary_url, sentinel.sentinel.url())) as db:
        assert await db.redis.ping()
        assert await master_port(db) == await sentinel_master_port(sentinel)
        role = await db.redis.execute_command("ROLE")
        assert role[0] in (b"master", "master")


async def test_failover_during_cached_reads_causes_no_error(
    sentinel: SentinelSet, pg: PgPair
) -> None:
    settings = make_settings(pg.primary_url, sentinel.sentinel.url())
    async with Database(settings) as db:
        portfolio = await create_portfolio(db, name="through a failover")
        await record_trade(
            db,
            portfolio_id=portfolio.id,
            symbol="ACME",
            side="buy",
            quantity=Decimal(3),
            price=Decimal(7),
        )
        await get_cached_portfolio(db, portfolio.id)
        await db.cache.drain()
        old_master = await master_port(db)
        expected = {"ACME": Decimal(3)}
        errors: list[BaseException] = []
        reads = 0
        stop = asyncio.Event()

        async def reader() -> None:
            nonlocal reads
            while not stop.is_set():
                try:
                    found = await get_cached_portfolio(db, portfolio.id)
                    assert found is not None
                    assert {p.symbol: p.quantity for p in found.positions} == expected
                    reads += 1
                except BaseException as exc:  # any error reaching a caller fails the test
                    errors.append(exc)
                await asyncio.sleep(0.002)

        readers = [asyncio.create_task(reader()) for _ in range(8)]
        try:
            await asyncio.sleep(0.3)
            hits_before = db.cache.stats().hits
            assert hits_before > 0
            admin = redis_asyncio.Redis(host="127.0.0.1", port=sentinel.sentinel.port)
            try:
                assert await admin.execute_command("SENTINEL", "FAILOVER", SERVICE)
            finally:
                await admin.aclose()
            deadline = time.monotonic() + 30
            while await sentinel_master_port(sentinel) == old_master:
                assert time.monotonic() < deadline, "sentinel did not fail over"
                await asyncio.sleep(0.1)
            switched = time.monotonic()
            # The client follows at once (+switch-master), although the old master
            # still answers as a master until Sentinel reconfigures it.
            while {await master_port(db) for _ in range(20)} != {
                await sentinel_master_port(sentinel)
            }:
                assert time.monotonic() - switched < 3, "the client did not follow the failover"
                await asyncio.sleep(0.05)
            # The cache fails open during the switch, then serves hits from the new master.
            while True:
                hits = db.cache.stats().hits
                await asyncio.sleep(0.2)
                if db.cache.stats().hits > hits and await master_port(db) != old_master:
                    break
                assert time.monotonic() < deadline, "cache hits did not resume"
        finally:
            stop.set()
            await asyncio.gather(*readers)
        assert errors == [], errors[:3]
        assert reads > 100
        assert await master_port(db) == await sentinel_master_port(sentinel) != old_master

        # Writes invalidate on the new master: the next cached read is fresh.
        await record_trade(
            db,
            portfolio_id=portfolio.id,
            symbol="ACME",
            side="buy",
            quantity=Decimal(2),
            price=Decimal(7),
        )
        found = await get_cached_portfolio(db, portfolio.id)
        assert found is not None
        assert [p.quantity for p in found.positions] == [Decimal(5)]


async def test_master_crash_fails_open_then_resumes(sentinel: SentinelSet, pg: PgPair) -> None:
    """The master dies (SIGKILL): reads fall back to PostgreSQL until Sentinel promotes."""
    settings = make_settings(pg.primary_url, sentinel.sentinel.url())
    async with Database(settings) as db:
        portfolio = await create_portfolio(db, name="through a crash")
        await get_cached_portfolio(db, portfolio.id)
        await db.cache.drain()
        old_master = await master_port(db)
        victim = next(n for n in (sentinel.master, sentinel.replica) if n.port == old_master)
        errors: list[BaseException] = []
        stop = asyncio.Event()

        async def reader() -> None:
            while not stop.is_set():
                try:
                    found = await get_cached_portfolio(db, portfolio.id)
                    assert found is not None and found.name == "through a crash"
                except BaseException as exc:
                    errors.append(exc)
                await asyncio.sleep(0.005)

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        try:
            await asyncio.sleep(0.2)
            victim.process.kill()
            deadline = time.monotonic() + 30
            while await sentinel_master_port(sentinel) == old_master:
                assert time.monotonic() < deadline, "sentinel did not fail over"
                await asyncio.sleep(0.1)
            while True:
                hits = db.cache.stats().hits
                await asyncio.sleep(0.2)
                if db.cache.stats().hits > hits:
                    break
                assert time.monotonic() < deadline, "cache hits did not resume"
        finally:
            stop.set()
            await asyncio.gather(*readers)
        stats = db.cache.stats()
        assert errors == [], errors[:3]
        assert stats.errors > 0 and stats.bypassed > 0, stats  # it failed open meanwhile
        assert await master_port(db) == await sentinel_master_port(sentinel) != old_master
