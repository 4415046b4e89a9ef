"""record_trade under contention vs a hand-written asyncpg transaction."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg

from alpha_data import Database, Settings
from alpha_data.models import Portfolio, Position
from alpha_data.services import record_trade, weighted_entry_price
from bench.harness import Result, compare
from bench.setup import REDIS_URL, dsn

TASKS = 20
LOCK = (
    "SELECT id, quantity, entry_price FROM positions"
    " WHERE portfolio_id = $1 AND symbol = $2 FOR UPDATE"
)
INSERT = (
    "INSERT INTO trades (portfolio_id, symbol, side, quantity, price, fees, order_type, status)"
    " VALUES ($1, $2, 'buy', $3, $4, 0, 'market', 'filled') RETURNING id"
)
UPDATE = "UPDATE positions SET quantity = $2, entry_price = $3, version = version + 1 WHERE id = $1"


async def _book(db: Database, name: str) -> int:
    async with db.unit_of_work() as uow:
        p = await uow.portfolios.add(Portfolio(name=name))
        await uow.portfolios.add_position(
            Position(
                portfolio_id=p.id, symbol="AAPL", quantity=Decimal("1"), entry_price=Decimal("100")
            )
        )
        await uow.commit()
    return p.id


async def _quantity(pool: asyncpg.Pool, portfolio_id: int) -> Decimal:
    value = await pool.fetchval(
        "SELECT quantity FROM positions WHERE portfolio_id = $1 AND symbol = 'AAPL'", portfolio_id
    )
    return Decimal(value)


async def run(url: str, *, quick: bool) -> list[Result]:
    """20 concurrent buys of one position: ours vs asyncpg SELECT … FOR UPDATE."""
    settings = Settings(  # type: ignore[call-arg]
        database_url=url,
        redis_url=REDIS_URL,
        pool_size=TASKS,
        max_overflow=0,
        cache_prefix="bench:services",
        _env_file=None,
    )
    db = Database(settings)
    await db.connect()
    pool = await asyncpg.create_pool(dsn(url), min_size=TASKS, max_size=TASKS)
    ours_id = await _book(db, "ours")
    base_id = await _book(db, "baseline")
    calls = {"ours": 0, "baseline": 0}
    price = Decimal("101.25")

    async def ours() -> None:
        await asyncio.gather(
            *(
                record_trade(
                    db,
                    portfolio_id=ours_id,
                    symbol="AAPL",
                    side="buy",
                    quantity=Decimal("1"),
                    price=price,
                )
                for _ in range(TASKS)
            )
        )
        calls["ours"] += TASKS

    async def one_baseline() -> None:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(LOCK, base_id, "AAPL")
            await conn.fetchval(INSERT, base_id, "AAPL", Decimal("1"), price)
            qty, entry = Decimal(row["quantity"]), Decimal(row["entry_price"])
            await conn.execute(
                UPDATE, row["id"], qty + 1, weighted_entry_price(qty, entry, Decimal("1"), price)
            )

    async def baseline() -> None:
        await asyncio.gather(*(one_baseline() for _ in range(TASKS)))
        calls["baseline"] += TASKS

    try:
        result = await compare(
            f"record_trade, {TASKS} concurrent tasks on one position",
            ours,
            baseline,
            baseline_name="asyncpg transaction with SELECT … FOR UPDATE",
            goal="<= 1.5x, and exact",
            limit=1.5,
            rounds=3 if quick else 8,
            per_round=2 if quick else 5,
            warmup=1,
        )
        exact = (
            await _quantity(pool, ours_id) == 1 + calls["ours"]
            and await _quantity(pool, base_id) == 1 + calls["baseline"]
        )
        result.note = "exact" if exact else "QUANTITY MISMATCH"
        result.met = bool(result.met) and exact
        result.ours_median_ms /= TASKS
        result.ours_p95_ms /= TASKS
        result.baseline_median_ms /= TASKS
        result.baseline_p95_ms /= TASKS
        return [result]
    finally:
        await pool.close()
        await db.cache.clear()
        await db.close()
