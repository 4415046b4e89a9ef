"""The transactional outbox: what it adds to a commit, and how fast a relay drains a backlog.

* ``record_trade`` with the outbox (the row and the sequence bump written in
  its transaction, delivered after COMMIT, deleted in a background batch)
  against the same service on a unit of work without an outbox (effects
  delivered after COMMIT only from memory, as before issue 16).
* Relay throughput: a backlog of ``record_trade``-shaped rows (one tag set,
  TradeExecuted + PositionChanged) drained by ``Relay.step`` batches
  (claim SKIP LOCKED, one invalidation, one XADD/PUBLISH pipeline, DELETE,
  COMMIT), per row, against the Redis part alone (the same events appended
  and published with redis-py).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from alpha_data import Database, Settings
from alpha_data.events import PositionChanged, TradeExecuted
from alpha_data.outbox import Effects, Relay
from alpha_data.repositories import outbox as rows
from alpha_data.services import create_portfolio, record_trade
from alpha_data.uow import IsolationLevel, UnitOfWork
from bench.harness import Result, compare
from bench.setup import REDIS_URL


class _WithoutOutbox(Database):
    """The same Database whose units of work keep effects in memory only (the old path)."""

    def unit_of_work(
        self, *, read_only: bool = False, isolation_level: IsolationLevel | None = None
    ) -> UnitOfWork:
        uow = super().unit_of_work(read_only=read_only, isolation_level=isolation_level)
        uow._outbox = None
        return uow


def _settings(url: str, prefix: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        database_url=url,
        redis_url=REDIS_URL,
        cache_prefix=prefix,
        outbox_relay=False,
        _env_file=None,
    )


async def _record_trade(url: str, quick: bool) -> Result:
    ours, base = (
        Database(_settings(url, "bench:outbox")),
        _WithoutOutbox(_settings(url, "bench:plain")),
    )
    await ours.connect()
    await base.connect()
    try:
        a = (await create_portfolio(ours, name="with outbox")).id
        b = (await create_portfolio(base, name="without")).id

        def buy(db: Database, pid: int) -> Any:
            return lambda: record_trade(
                db, portfolio_id=pid, symbol="AAPL", side="buy", quantity="1", price="10"
            )

        return await compare(
            "record_trade with the outbox",
            buy(ours, a),
            buy(base, b),
            baseline_name="same transaction, effects from memory (no outbox)",
            goal="report",
            limit=None,
            rounds=4 if quick else 10,
            per_round=20 if quick else 50,
            warmup=10,
            note="one INSERT (with the sequence bump in a CTE) before COMMIT; batched DELETE after",
        )
    finally:
        await ours.close()
        await base.close()


def _effects(i: int) -> Effects:
    now = datetime.now(timezone.utc)
    return Effects(
        tags=[f"portfolios:{i % 50}"],
        events=[
            TradeExecuted(
                trade_id=i,
                portfolio_id=i % 50,
                symbol="AAPL",
                side="buy",
                quantity=Decimal(1),
                price=Decimal(10),
                executed_at=now,
            ),
            PositionChanged(
                portfolio_id=i % 50, symbol="AAPL", quantity=Decimal(i), entry_price=Decimal(10)
            ),
        ],
    )


async def _backlog(db: Database, count: int) -> None:
    for start in range(0, count, 500):
        async with db.session() as session, session.begin():
            for i in range(start, min(count, start + 500)):
                e = _effects(i)
                await rows.write(session, db.outbox.prefix, e.payload(), e.counts(), 0.0)


async def _relay(url: str, quick: bool) -> dict[str, Any]:
    count = 1000 if quick else 5000
    db = Database(_settings(url, "bench:relay"))
    await db.connect()
    try:
        await _backlog(db, count)
        relay = Relay(db.outbox, dsn=None, batch=200)
        started = time.perf_counter()
        while await relay.step():
            pass
        ours = time.perf_counter() - started
        events = [e for i in range(count) for e in _effects(i).events]
        started = time.perf_counter()
        for i in range(0, len(events), 400):
            await db.events.deliver(events[i : i + 400])
        base = time.perf_counter() - started
        await db.redis.delete(*(db.events.stream_for(t) for t in (TradeExecuted, PositionChanged)))
    finally:
        await db.close()
    return {
        "name": f"relay drains {count} rows (2 events each), batches of 200",
        "baseline": "the same events delivered by bus.deliver alone (Redis part only)",
        "ours_median_ms": ours * 1000 / count,
        "baseline_median_ms": base * 1000 / count,
        "ratio": ours / base,
        "goal": "report",
        "note": f"{count / ours:.0f} rows/s, {2 * count / ours:.0f} events/s",
    }


async def run(url: str, *, quick: bool) -> list[Any]:
    """Outbox cost per commit; relay throughput."""
    return [await _record_trade(url, quick), await _relay(url, quick)]


if __name__ == "__main__":
    import asyncio

    from bench.setup import bench_database

    async def _main() -> None:
        async with bench_database() as url:
            for row in await run(url, quick=True):
                print(row)

    asyncio.run(_main())
