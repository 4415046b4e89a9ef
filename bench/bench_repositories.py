"""Repository reads and bulk writes against hand-written asyncpg."""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from alpha_data import Database, Settings
from alpha_data.models import Portfolio, Position, Trade, User
from bench.harness import Result, compare, time_op
from bench.setup import dsn

USER_SQL = (
    "SELECT id, username, email, password_hash, role, is_active, last_login, created_at,"
    " updated_at FROM users WHERE id = $1"
)
PORTFOLIO_SQL = (
    "SELECT id, name, description, version, created_at, updated_at FROM portfolios WHERE id = $1"
)
POSITIONS_SQL = (
    "SELECT id, portfolio_id, symbol, quantity, entry_price, current_price, version,"
    " created_at, updated_at FROM positions WHERE portfolio_id = $1 ORDER BY symbol"
)
TRADE_INSERT = (
    "INSERT INTO trades (portfolio_id, symbol, side, quantity, price, fees, order_type, status)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)


async def _seed(db: Database) -> tuple[int, int]:
    async with db.unit_of_work() as uow:
        users = await uow.users.add_many(
            User(username=f"bench{i}", email=f"bench{i}@x.io", password_hash="x")
            for i in range(2000)
        )
        portfolio = await uow.portfolios.add(Portfolio(name="bench"))
        for i in range(20):
            await uow.portfolios.add_position(
                Position(
                    portfolio_id=portfolio.id,
                    symbol=f"SYM{i:02d}",
                    quantity=Decimal("10.5"),
                    entry_price=Decimal("101.25"),
                )
            )
        await uow.commit()
    return users[len(users) // 2].id, portfolio.id


async def run(url: str, *, quick: bool) -> list[Result]:
    """All repository benchmarks on the database at ``url`` (seeded here)."""
    rounds, per_round = (4, 25) if quick else (10, 100)
    settings = Settings(database_url=url, cache_enabled=False, _env_file=None)  # type: ignore[call-arg]
    db = Database(settings)
    await db.connect()
    pool = await asyncpg.create_pool(dsn(url), min_size=2, max_size=10)
    held = await pool.acquire()
    results: list[Result] = []
    try:
        user_id, portfolio_id = await _seed(db)

        async def ours_get() -> None:
            async with db.unit_of_work(read_only=True) as uow:
                assert await uow.users.get(user_id) is not None

        async def pool_get() -> None:
            async with pool.acquire() as conn:
                assert await conn.fetchrow(USER_SQL, user_id) is not None

        async def held_get() -> None:
            assert await held.fetchrow(USER_SQL, user_id) is not None

        kw = {"rounds": rounds, "per_round": per_round}
        results.append(
            await compare(
                "get by id, cache off, fresh read-only UoW",
                ours_get,
                pool_get,
                baseline_name="asyncpg pool.acquire + prepared fetchrow",
                goal="<= 1.2x",
                limit=1.2,
                **kw,
            )
        )
        results.append(
            await compare(
                "get by id, cache off (vs held connection)",
                ours_get,
                held_get,
                baseline_name="asyncpg fetchrow on a held connection",
                goal="report",
                limit=None,
                **kw,
            )
        )

        async def ours_positions() -> None:
            async with db.unit_of_work(read_only=True) as uow:
                p = await uow.portfolios.get_with_positions(portfolio_id)
                assert p is not None and len(p.positions) == 20

        async def pool_positions() -> None:
            async with pool.acquire() as conn:
                assert await conn.fetchrow(PORTFOLIO_SQL, portfolio_id) is not None
                assert len(await conn.fetch(POSITIONS_SQL, portfolio_id)) == 20

        async def held_positions() -> None:
            assert await held.fetchrow(PORTFOLIO_SQL, portfolio_id) is not None
            assert len(await held.fetch(POSITIONS_SQL, portfolio_id)) == 20

        results.append(
            await compare(
                "portfolio with 20 positions, cache off",
                ours_positions,
                pool_positions,
                baseline_name="two prepared queries on one acquired connection",
                goal="<= 1.3x",
                limit=1.3,
                **kw,
            )
        )
        results.append(
            await compare(
                "portfolio with 20 positions (vs held connection)",
                ours_positions,
                held_positions,
                baseline_name="two prepared queries on a held connection",
                goal="report",
                limit=None,
                **kw,
            )
        )
        results.append(await _add_many(db, pool, portfolio_id, quick=quick))
        results.append(await _paging(db, quick=quick))
    finally:
        await pool.release(held)
        await pool.close()
        await db.close()
    return results


async def _add_many(db: Database, pool: asyncpg.Pool, portfolio_id: int, *, quick: bool) -> Result:
    n = 2000 if quick else 10_000

    def trades() -> list[Trade]:
        return [
            Trade(
                portfolio_id=portfolio_id,
                symbol="AAPL",
                side="buy",
                quantity=Decimal("1.5"),
                price=Decimal("190.25"),
                fees=Decimal("0"),
                order_type="market",
                status="filled",
            )
            for _ in range(n)
        ]

    async def ours() -> None:
        batch = trades()
        async with db.unit_of_work() as uow:
            await uow.portfolios.add_trades(batch)
            await uow.commit()

    async def baseline() -> None:
        rows = [
            (
                portfolio_id,
                "AAPL",
                "buy",
                Decimal("1.5"),
                Decimal("190.25"),
                Decimal("0"),
                "market",
                "filled",
            )
            for _ in range(n)
        ]
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(TRADE_INSERT, rows)

    return await compare(
        f"add_many {n} trades",
        ours,
        baseline,
        baseline_name="asyncpg executemany in one transaction",
        goal="<= 1.0x",
        limit=1.0,
        rounds=2 if quick else 3,
        per_round=1,
        warmup=1,
    )


async def _paging(db: Database, *, quick: bool) -> Result:
    """Keyset page at depth 1000 costs what page 1 costs."""
    async with db.unit_of_work(read_only=True) as uow:
        after = None
        cursors: list[str | None] = [None]
        for _ in range(1000 if not quick else 200):
            page = await uow.users.list(limit=2, after=after)
            if page.next_cursor is None:
                break
            after = page.next_cursor
            cursors.append(after)
    deep = cursors[-1]

    async def page_deep() -> None:
        async with db.unit_of_work(read_only=True) as uow:
            await uow.users.list(limit=2, after=deep)

    async def page_first() -> None:
        async with db.unit_of_work(read_only=True) as uow:
            await uow.users.list(limit=2)

    depth = len(cursors) - 1
    await time_op(page_deep, 5)
    return await compare(
        f"list page at depth {depth} vs page 1 (keyset)",
        page_deep,
        page_first,
        baseline_name="page 1 of the same list",
        goal="<= 1.2x",
        limit=1.2,
        rounds=4 if quick else 8,
        per_round=25,
    )
