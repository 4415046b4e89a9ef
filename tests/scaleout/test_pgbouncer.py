"""PgBouncer in transaction pooling mode in front of the primary: the whole flow, 50 at once."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import asyncpg
import pytest
from sqlalchemy import text

from alpha_data import Database
from alpha_data.errors import DatabaseUnavailableError
from alpha_data.pgbouncer import check_statement_timeout
from alpha_data.services import (
    create_portfolio,
    create_user,
    get_cached_portfolio,
    insert_portfolio_metrics,
    insert_portfolio_metrics_batch,
    record_trade,
)
from tests.scaleout.components import PgBouncer, RedisNode
from tests.scaleout.conftest import PgPair, make_settings

TASKS = 50
TRADES = 4


async def flow(db: Database, n: int) -> int:
    """The acceptance-style flow of one client."""
    await create_user(
        db, username=f"bouncer{n:03d}", email=f"bouncer{n:03d}@x.io", password="Tr0ub4dor&3-horse"
    )
    portfolio = await create_portfolio(db, name=f"pooled {n}")
    for i in range(TRADES):
        await record_trade(
            db,
            portfolio_id=portfolio.id,
            symbol="ACME" if i % 2 == 0 else "INIT",
            side="buy",
            quantity=Decimal(i + 1),
            price=Decimal("10.5"),
            external_id=f"bouncer-{n}-{i}",
        )
    for _ in range(2):  # a miss (autocommit read through PgBouncer), then a hit
        cached = await get_cached_portfolio(db, portfolio.id)
        assert cached is not None
        held = {p.symbol: p.quantity for p in cached.positions}
        assert held == {"ACME": Decimal(1 + 3), "INIT": Decimal(2 + 4)}
    await insert_portfolio_metrics(db, portfolio.id, Decimal("1234.5"))
    await insert_portfolio_metrics_batch(db, {portfolio.id: 1.0})  # binary COPY
    return portfolio.id


async def test_acceptance_flow_through_pgbouncer_with_50_tasks(
    bouncer: PgBouncer, pg: PgPair, redis_plain: RedisNode, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        bouncer.url(), redis_plain.url(), pgbouncer_mode=True, pool_size=20, max_overflow=30
    )
    caplog.set_level(logging.WARNING, logger="alpha_data.pgbouncer")
    async with Database(settings) as db:
        assert await check_statement_timeout(db.engine, settings)
        results = await asyncio.gather(*(flow(db, n) for n in range(TASKS)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == [], errors[:3]
        ids = [r for r in results if isinstance(r, int)]
        # Many client connections shared a few server connections.
        assert db.engine.pool.checkedin() > 4  # type: ignore[attr-defined]
        # Once the writes are over, cached reads are served from Redis.
        await asyncio.gather(*(get_cached_portfolio(db, i) for i in ids))
        await db.cache.drain()
        hits = db.cache.stats().hits
        await asyncio.gather(*(get_cached_portfolio(db, i) for i in ids))
        assert db.cache.stats().hits - hits == TASKS

        # Read-only autocommit units of work: many statements, no prepared-statement clash.
        async def reads(n: int) -> None:
            for _ in range(10):
                async with db.unit_of_work(read_only=True) as uow:
                    assert await uow.users.get_by_username(f"bouncer{n:03d}", cached=False)
                    await uow.session.execute(text("SELECT count(*) FROM trades"))

        await asyncio.gather(*(reads(n) for n in range(TASKS)))
    assert not [r for r in caplog.records if r.name == "alpha_data.pgbouncer"]
    pools = [p for p in bouncer.show("POOLS") if p["database"] == bouncer.database]
    assert pools and all(p["pool_mode"] == "transaction" for p in pools)
    servers = [s for s in bouncer.show("SERVERS") if s["database"] == bouncer.database]
    assert 0 < len(servers) <= 4
    conn = await asyncpg.connect(pg.primary.dsn(pg.database))
    try:
        trades = await conn.fetchval(
            "SELECT count(*) FROM trades WHERE external_id LIKE 'bouncer-%'"
        )
        points = await conn.fetchval(
            "SELECT count(*) FROM alphapulse.metrics WHERE labels->>'portfolio_id' IN "
            "(SELECT id::text FROM portfolios WHERE name LIKE 'pooled %')"
        )
    finally:
        await conn.close()
    assert trades == TASKS * TRADES
    assert points == TASKS * 2
    assert await prepared_statements_left(bouncer) == 0


async def prepared_statements_left(bouncer: PgBouncer) -> int:
    """Named prepared statements on PgBouncer's server connections (each one sampled)."""
    dsn = bouncer.url().replace("postgresql+asyncpg", "postgresql")
    clients = [await asyncpg.connect(dsn, statement_cache_size=0) for _ in range(4)]
    try:
        transactions = [c.transaction() for c in clients]
        for t in transactions:  # four open transactions hold all four server connections
            await t.start()
        counts = [await c.fetchval("SELECT count(*) FROM pg_prepared_statements") for c in clients]
        for t in transactions:
            await t.rollback()
    finally:
        for c in clients:
            await c.close()
    return sum(counts)


async def test_without_pgbouncer_mode_the_startup_parameters_are_refused(
    bouncer: PgBouncer, redis_plain: RedisNode
) -> None:
    """Why the mode exists: PgBouncer rejects statement_timeout as a startup parameter."""
    settings = make_settings(bouncer.url(), redis_plain.url(), connect_timeout=2)
    db = Database(settings)
    try:
        with pytest.raises(DatabaseUnavailableError):
            await db.connect()
    finally:
        await db.close()


async def test_statement_timeout_mismatch_is_reported(
    bouncer: PgBouncer, redis_plain: RedisNode, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        bouncer.url(), redis_plain.url(), pgbouncer_mode=True, statement_timeout=5
    )
    caplog.set_level(logging.WARNING, logger="alpha_data.pgbouncer")
    async with Database(settings):
        pass
    assert any("statement_timeout is 30000 ms" in r.getMessage() for r in caplog.records)
