"""Units of work cancelled at random points leak nothing and half-write nothing.

1,500 reads, writes and ``db.run`` blocks, 25 at a time, each cancelled
after a random delay (some before their first statement, some mid-flush,
some during COMMIT, some never). Afterwards: no connection is checked out of
the pool, no session of the test database sits ``idle in transaction``, and
every committed write is whole (each portfolio has its one position).
SQLAlchemy itself needed fixes up to 2.0.38 for this; this keeps it held.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

from sqlalchemy import func, select, text

from alpha_data import Database
from alpha_data.models import Portfolio, Position
from alpha_data.uow import UnitOfWork
from tests.reliability.tools import Tally, admin_connection

UNITS = 1_500
CONCURRENCY = 25
SEED = 20261207


async def _write(db: Database, n: int) -> None:
    async with db.unit_of_work() as uow:
        portfolio = await uow.portfolios.add(Portfolio(name=f"cx-{n}"))
        await uow.portfolios.add_position(
            Position(
                portfolio_id=portfolio.id,
                symbol="CX",
                quantity=Decimal("1"),
                entry_price=Decimal("2"),
            )
        )
        await uow.commit()


async def _read(db: Database, n: int) -> None:
    async with db.unit_of_work(read_only=True) as uow:
        await uow.portfolios.list(limit=5)
        await uow.portfolios.get(1 + n % 50)
        await uow.session.execute(text("SELECT pg_sleep(0.002)"))


async def _run_block(db: Database, n: int) -> None:
    async def fn(uow: UnitOfWork) -> int:
        portfolio = await uow.portfolios.add(Portfolio(name=f"cx-run-{n}"))
        await uow.portfolios.add_position(
            Position(
                portfolio_id=portfolio.id,
                symbol="RUN",
                quantity=Decimal("3"),
                entry_price=Decimal("4"),
            )
        )
        return portfolio.id

    await db.run(fn)


async def _idle_in_transaction(url: str) -> int:
    async with admin_connection(url) as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        )


async def test_randomly_cancelled_units_of_work_leak_nothing(
    real_db: Database, tally: Tally
) -> None:
    db = real_db
    rng = random.Random(SEED)
    kinds = (_write, _read, _run_block)
    outcomes = {"done": 0, "cancelled": 0}

    async def one(n: int) -> None:
        task = asyncio.ensure_future(kinds[n % 3](db, n))
        delay = rng.choice((0.0, rng.uniform(0, 0.004), rng.uniform(0, 0.02), None))
        if delay is not None:
            await asyncio.sleep(delay)
            task.cancel()
        try:
            await task
            outcomes["done"] += 1
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1

    for start in range(0, UNITS, CONCURRENCY):
        await asyncio.gather(*(one(n) for n in range(start, min(UNITS, start + CONCURRENCY))))
    tally.fault("unit of work cancelled", outcomes["cancelled"])
    tally.case("cancellation unit", UNITS)
    assert outcomes["cancelled"] > UNITS // 3 and outcomes["done"] > UNITS // 10, outcomes

    assert db.pool_status()["checkedout"] == 0
    # Backends of terminated connections exit asynchronously: let the server settle.
    for _ in range(100):
        idle = await _idle_in_transaction(db.settings.database_url)
        if idle == 0:
            break
        await asyncio.sleep(0.1)
    assert idle == 0

    async with db.unit_of_work(read_only=True) as uow:
        per_portfolio = (
            select(Portfolio.id, func.count(Position.id))
            .outerjoin(Position, Position.portfolio_id == Portfolio.id)
            .where(Portfolio.name.like("cx-%"))
            .group_by(Portfolio.id)
        )
        rows = (await uow.session.execute(per_portfolio)).all()
    assert rows, "no write committed at all"
    assert all(count == 1 for _, count in rows), "a write was committed half"
    tally.rows_verified("portfolios after cancellation", len(rows))
    assert db.pool_status()["checkedout"] == 0
