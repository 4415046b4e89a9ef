"""Concurrency: racing trades, stale writes and an exhausted pool lose nothing, half-write nothing.

Every call below runs in a unit of work of its own on the real pool (separate
PostgreSQL connections), and every test ends by reading back what was
committed.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import case, func, select

from alpha_data import Database, Settings
from alpha_data.errors import ConflictError, TransientError
from alpha_data.models import Alert, Portfolio, Position, Side, Trade
from alpha_data.services import (
    create_portfolio,
    raise_alert,
    record_trade,
    weighted_entry_price,
)
from alpha_data.uow import UnitOfWork
from tests.reliability.tools import Tally, listening, pool_checked_out

N = 50
QUANTUM = Decimal("0.00000001")


async def committed_trades(db: Database, portfolio_id: int) -> list[Trade]:
    async with db.unit_of_work(read_only=True) as uow:
        stmt = select(Trade).where(Trade.portfolio_id == portfolio_id).order_by(Trade.id)
        return list((await uow.session.execute(stmt)).scalars())


async def position(db: Database, portfolio_id: int, symbol: str) -> Position | None:
    async with db.unit_of_work(read_only=True) as uow:
        return await uow.portfolios.get_position(portfolio_id, symbol)


def replay(operations: list[dict[str, Any]]) -> tuple[Decimal, Decimal | None]:
    """The position after ``operations`` applied one after the other (the documented arithmetic)."""
    quantity, price = Decimal(0), None
    for op in operations:
        q, p = Decimal(op["quantity"]), Decimal(op["price"])
        if op["side"] == "buy":
            price = p if price is None else weighted_entry_price(quantity, price, q, p)
            quantity += q
        else:
            quantity -= q
            if quantity == 0:
                price = None
    return quantity, price


class LockOrder:
    """Observes in which order racing calls held the position's row lock.

    A call holds the lock from its first statement that takes it (``SELECT … FOR
    UPDATE``, ``UPDATE`` or ``DELETE`` of ``positions``) until it commits, so the
    order of each call's *last* such statement is the order the calls committed
    in (an attempt that was rolled back and re-run is superseded by the re-run).
    """

    def __init__(self) -> None:
        self.calls: dict[asyncio.Task[Any], int] = {}
        self.last: dict[asyncio.Task[Any], int] = {}
        self._ticks = itertools.count()

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sql = statement.lstrip().upper()
        if "POSITIONS" in sql and (sql.startswith(("UPDATE", "DELETE")) or "FOR UPDATE" in sql):
            task = asyncio.current_task()
            if task in self.calls:
                self.last[task] = next(self._ticks)

    async def race(
        self, db: Database, calls: list[dict[str, Any]], **common: Any
    ) -> tuple[list[Trade], list[dict[str, Any]]]:
        """Run ``record_trade`` for every call at once; (results, calls in commit order)."""

        async def one(i: int) -> Trade:
            task = asyncio.current_task()
            assert task is not None
            self.calls[task] = i
            return await record_trade(db, **common, **calls[i])

        with listening(db.engine.sync_engine, "after_cursor_execute", self):
            results = await asyncio.gather(*(one(i) for i in range(len(calls))))
        assert set(self.last) == set(self.calls), "a call never locked the position"
        ordered = sorted(self.last, key=self.last.__getitem__)
        return list(results), [calls[self.calls[task]] for task in ordered]


async def net_quantity_in_sql(db: Database, portfolio_id: int, symbol: str) -> Decimal:
    """Buys minus sells, summed by PostgreSQL over the committed trade rows."""
    signed = case((Trade.side == Side.BUY, Trade.quantity), else_=-Trade.quantity)
    async with db.unit_of_work(read_only=True) as uow:
        stmt = select(func.sum(signed)).where(
            Trade.portfolio_id == portfolio_id, Trade.symbol == symbol
        )
        return Decimal((await uow.session.execute(stmt)).scalar_one())


# -- racing trades on one position ------------------------------------------------------------


async def test_fifty_concurrent_buys_end_at_the_exact_weighted_average(real_db, tally: Tally):
    db = real_db
    pid = (await create_portfolio(db, name="buys")).id
    await record_trade(db, portfolio_id=pid, symbol="NVDA", side="buy", quantity=100, price=500)
    rng = random.Random(9)
    calls = [
        {
            "quantity": Decimal(rng.randint(1, 10**6)) / 10**4,
            "price": Decimal(rng.randint(10**6, 10**8)) / 10**5,
        }
        for _ in range(N)
    ]
    calls = [{"side": "buy", **c} for c in calls]
    results, committed = await LockOrder().race(db, calls, portfolio_id=pid, symbol="NVDA")
    tally.case("concurrent record_trade", N)

    trades = await committed_trades(db, pid)
    assert len(trades) == N + 1
    assert {t.id for t in results} == {t.id for t in trades[1:]}  # every call is one row
    pos = await position(db, pid, "NVDA")
    assert pos is not None
    # Order independent: the quantity is the exact sum.
    assert pos.quantity == 100 + sum(c["quantity"] for c in calls)
    assert pos.quantity == await net_quantity_in_sql(db, pid, "NVDA")
    # Rounding makes the average depend on the order: replaying the calls one after the
    # other in the order they committed gives the stored price to the last digit.
    opening = {"side": "buy", "quantity": 100, "price": 500}
    assert (pos.quantity, pos.entry_price) == replay([opening, *committed])
    # And that price is the exact weighted average up to one half-unit of rounding per step.
    exact = Fraction(100 * 500) + sum(Fraction(c["quantity"]) * Fraction(c["price"]) for c in calls)
    exact /= Fraction(pos.quantity)
    assert abs(Fraction(pos.entry_price) - exact) <= Fraction(N + 1, 2) * Fraction(QUANTUM)
    tally.rows_verified("trades", len(trades))
    tally.rows_verified("positions", 1)


async def test_fifty_concurrent_mixed_trades_equal_the_sequential_replay(real_db, tally: Tally):
    db = real_db
    pid = (await create_portfolio(db, name="mixed")).id
    await record_trade(db, portfolio_id=pid, symbol="SPY", side="buy", quantity=1000, price=100)
    rng = random.Random(17)
    calls: list[dict[str, Any]] = []
    for i in range(N):
        side = "sell" if i % 3 == 0 else "buy"  # sells total < 17 * 5: never an oversell
        calls.append(
            {
                "side": side,
                "quantity": Decimal(rng.randint(1, 500)) / 100,
                "price": Decimal(rng.randint(9_000, 11_000)) / 100,
            }
        )
    results, committed = await LockOrder().race(db, calls, portfolio_id=pid, symbol="SPY")
    tally.case("concurrent record_trade", N)
    assert len({t.id for t in results}) == N

    trades = await committed_trades(db, pid)
    assert len(trades) == N + 1
    buys = sum(c["quantity"] for c in calls if c["side"] == "buy")
    sells = sum(c["quantity"] for c in calls if c["side"] == "sell")
    pos = await position(db, pid, "SPY")
    assert pos is not None
    assert pos.quantity == 1000 + buys - sells == await net_quantity_in_sql(db, pid, "SPY")
    opening = {"side": "buy", "quantity": 1000, "price": 100}
    assert (pos.quantity, pos.entry_price) == replay([opening, *committed])

    # The same operations, one after the other in commit order, on a second portfolio.
    ref = (await create_portfolio(db, name="mixed-sequential")).id
    for c in [opening, *committed]:
        await record_trade(db, portfolio_id=ref, symbol="SPY", **c)
    tally.case("sequential record_trade", N + 1)
    ref_pos = await position(db, ref, "SPY")
    assert ref_pos is not None
    assert (ref_pos.quantity, ref_pos.entry_price) == (pos.quantity, pos.entry_price)
    assert len(await committed_trades(db, ref)) == N + 1
    tally.rows_verified("trades", 2 * (N + 1))
    tally.rows_verified("positions", 2)


async def test_racing_repeats_of_external_ids_record_one_trade_each(real_db, tally: Tally):
    db = real_db
    pid = (await create_portfolio(db, name="idempotent")).id
    await record_trade(db, portfolio_id=pid, symbol="SOL", side="buy", quantity=10, price=100)
    base = {"portfolio_id": pid, "symbol": "SOL"}
    calls: list[dict[str, Any]] = (
        [{"external_id": "ext-a", "side": "buy", "quantity": 2, "price": 101}] * 15
        + [{"external_id": "ext-b", "side": "sell", "quantity": 1, "price": 99}] * 15
        # the same external id for two different trades: one wins, the other is a conflict
        + [{"external_id": "ext-c", "side": "buy", "quantity": 3, "price": 102}] * 5
        + [{"external_id": "ext-c", "side": "buy", "quantity": 4, "price": 102}] * 5
    )
    random.Random(3).shuffle(calls)
    outcomes = await asyncio.gather(
        *(record_trade(db, **base, **c) for c in calls), return_exceptions=True
    )
    tally.case("racing external_id", len(calls))

    by_ext: dict[str, set[int]] = {}
    conflicts: list[tuple[dict[str, Any], BaseException]] = []
    for c, out in zip(calls, outcomes, strict=True):
        if isinstance(out, BaseException):
            conflicts.append((c, out))
        else:
            by_ext.setdefault(c["external_id"], set()).add(out.id)
    assert all(isinstance(e, ConflictError) for _, e in conflicts), conflicts
    assert all(e.constraint == "uq_trades_external_id" for _, e in conflicts)  # type: ignore[attr-defined]
    assert {len(ids) for ids in by_ext.values()} == {1}  # every repeat got the same trade
    assert {c["external_id"] for c, _ in conflicts} <= {"ext-c"}
    loser_quantities = {c["quantity"] for c, _ in conflicts}
    assert len(conflicts) == 5 and len(loser_quantities) == 1

    trades = await committed_trades(db, pid)
    assert sorted(t.external_id or "" for t in trades) == ["", "ext-a", "ext-b", "ext-c"]
    winner = next(t for t in trades if t.external_id == "ext-c")
    assert winner.quantity not in loser_quantities
    pos = await position(db, pid, "SOL")
    assert pos is not None
    assert pos.quantity == 10 + 2 - 1 + winner.quantity == await net_quantity_in_sql(db, pid, "SOL")
    tally.rows_verified("trades", len(trades))


# -- stale reads: optimistic locking ----------------------------------------------------------


async def _alert(db: Database) -> int:
    alert = await raise_alert(db, title="stale", message="original", severity="info", source="s")
    return alert.id


async def _position_row(db: Database) -> int:
    pid = (await create_portfolio(db, name="stale")).id
    await record_trade(db, portfolio_id=pid, symbol="IBM", side="buy", quantity=10, price=100)
    pos = await position(db, pid, "IBM")
    assert pos is not None
    return pos.id


TARGETS: dict[str, Any] = {
    # (create, load in a UoW, write writer n's values, the values writer n leaves)
    "alert": (
        _alert,
        lambda uow, i: uow.alerts.get_one(i),
        lambda obj, n: (setattr(obj, "title", f"writer {n}"), setattr(obj, "message", f"by {n}")),
        lambda obj: (obj.title, obj.message),
        lambda n: (f"writer {n}", f"by {n}"),
    ),
    "position": (
        _position_row,
        lambda uow, i: uow.session.get(Position, i),
        lambda obj, n: (
            setattr(obj, "quantity", Decimal(20 + n)),
            setattr(obj, "current_price", Decimal(200 + n)),
        ),
        lambda obj: (obj.quantity, obj.current_price),
        lambda n: (Decimal(20 + n), Decimal(200 + n)),
    ),
}


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("timing", ["one-after-the-other", "simultaneous"])
async def test_two_writers_from_stale_reads_one_wins_one_conflicts(
    real_db, tally: Tally, target: str, timing: str
):
    db = real_db
    create, load, write, values, expected = TARGETS[target]
    row_id = await create(db)
    model = Alert if target == "alert" else Position

    if timing == "one-after-the-other":
        async with db.unit_of_work() as first, db.unit_of_work() as second:
            a, b = await load(first, row_id), await load(second, row_id)
            write(a, 1)
            await first.commit()
            write(b, 2)
            with pytest.raises(ConflictError):
                await second.commit()
        winners = [1]
    else:
        both_read = asyncio.Event()
        readers: list[int] = []

        async def writer(uow: UnitOfWork, n: int) -> int:
            obj = await load(uow, row_id)
            readers.append(n)
            if len(readers) == 2:
                both_read.set()
            await asyncio.wait_for(both_read.wait(), 10)
            write(obj, n)
            await uow.commit()  # the second UPDATE waits for the first's row lock
            return n

        async def attempt(n: int) -> int:
            async with db.unit_of_work() as uow:
                return await writer(uow, n)

        outcomes = await asyncio.gather(attempt(1), attempt(2), return_exceptions=True)
        winners = [o for o in outcomes if isinstance(o, int)]
        losers = [o for o in outcomes if not isinstance(o, int)]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1 and isinstance(losers[0], ConflictError), outcomes
    tally.case("stale write", 2)

    async with db.unit_of_work(read_only=True) as uow:
        row = await uow.session.get(model, row_id)
        assert row is not None
        assert values(row) == expected(winners[0])  # the winner's write, whole
        assert row.version == 2  # one write landed: version bumped once
    tally.rows_verified(f"{target}s", 1)


# -- pool exhaustion --------------------------------------------------------------------------


async def test_pool_exhaustion_times_out_late_callers_and_the_pool_recovers(
    settings: Settings, truncate_after: None, tally: Tally
):
    timeout = 0.4
    db = Database(
        settings.model_copy(update={"pool_size": 2, "max_overflow": 1, "pool_timeout": timeout})
    )
    holders_in = asyncio.Semaphore(0)
    release = asyncio.Event()

    async def holder(n: int) -> None:
        async with db.unit_of_work() as uow:
            await uow.portfolios.add(Portfolio(name=f"held-{n}"))
            holders_in.release()
            await release.wait()
            await uow.commit()

    async def late(n: int) -> float:
        started = time.monotonic()
        with pytest.raises(TransientError, match="pool"):
            async with db.unit_of_work() as uow:
                await uow.portfolios.add(Portfolio(name=f"late-{n}"))
                await uow.commit()
        return time.monotonic() - started

    async def late_run() -> float:
        started = time.monotonic()

        async def add(uow: UnitOfWork) -> None:
            await uow.portfolios.add(Portfolio(name="late-run"))

        with pytest.raises(TransientError):
            await db.run(add, attempts=1)
        return time.monotonic() - started

    lag = 0.0

    async def ticker() -> None:
        nonlocal lag
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lag = max(lag, time.monotonic() - before - 0.01)

    try:
        holders = [asyncio.ensure_future(holder(n)) for n in range(3)]
        for _ in range(3):
            await asyncio.wait_for(holders_in.acquire(), 10)
        assert pool_checked_out(db) == 3  # pool_size + max_overflow, all held
        tick = asyncio.ensure_future(ticker())
        waits = await asyncio.gather(*(late(n) for n in range(4)), late_run())
        tally.fault("pool timeout", len(waits))
        tick.cancel()
        assert all(timeout * 0.9 <= w < timeout + 2.0 for w in waits), waits
        assert lag < 0.25, f"event loop stalled {lag:.3f}s while callers waited for the pool"

        release.set()
        await asyncio.gather(*holders)
        assert pool_checked_out(db) == 0

        async def after(n: int) -> int:
            async with db.unit_of_work() as uow:
                p = await uow.portfolios.add(Portfolio(name=f"after-{n}"))
                await uow.commit()
                return p.id

        assert len(set(await asyncio.gather(*(after(n) for n in range(10))))) == 10
        assert pool_checked_out(db) == 0
        assert (await db.health()).status == "ok"

        async with db.unit_of_work(read_only=True) as uow:
            names = sorted((await uow.session.execute(select(Portfolio.name))).scalars())
        assert names == sorted([f"held-{n}" for n in range(3)] + [f"after-{n}" for n in range(10)])
        tally.rows_verified("portfolios", len(names) + 5)  # present ones, and the 5 absent
    finally:
        release.set()
        await db.close()
