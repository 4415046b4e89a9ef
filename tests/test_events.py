"""Typed events over Redis pub/sub (and memory://): publish, subscribe, resubscribe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from alpha_data import Database, Settings
from alpha_data.errors import ConflictError
from alpha_data.events import AlertRaised, PositionChanged, Subscription, TradeExecuted
from alpha_data.testing.factories import UserFactory
from tests.support import REDIS_URL

WHEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=2)))


def trade(n: int = 1) -> TradeExecuted:
    return TradeExecuted(
        trade_id=n,
        portfolio_id=7,
        symbol="AAPL",
        side="buy",
        quantity=Decimal("1.50000000"),
        price=Decimal("190.12345678"),
        executed_at=WHEN,
    )


@pytest.fixture(params=["redis", "memory"])
async def bus_db(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Database]:
    if request.param == "memory":
        settings = settings.model_copy(update={"redis_url": "memory://"})
    database = Database(settings)
    try:
        yield database
    finally:
        await database.close()


async def next_event(sub: Subscription[Any], timeout: float = 5.0) -> Any:
    return await asyncio.wait_for(sub.__anext__(), timeout)


async def test_events_arrive_typed_and_exact(bus_db: Database) -> None:
    sent = trade()
    async with bus_db.events.subscribe(TradeExecuted, AlertRaised) as sub:
        assert await bus_db.events.publish(sent)
        assert await bus_db.events.publish(
            PositionChanged(portfolio_id=7, symbol="AAPL", quantity=Decimal(0), entry_price=None)
        )  # not subscribed: never delivered
        assert await bus_db.events.publish(
            AlertRaised(alert_id=3, title="drawdown", severity="error", source="risk")
        )
        got = await next_event(sub)
        assert got == sent and type(got) is TradeExecuted
        assert got.event_id == sent.event_id and got.sequence == 0
        assert got.quantity.as_tuple() == Decimal("1.50000000").as_tuple()
        assert got.executed_at == WHEN and got.executed_at.utcoffset() == timedelta(hours=2)
        assert isinstance(await next_event(sub), AlertRaised)
    assert bus_db.events.published == 3


async def test_channels_are_named_for_the_event_under_the_prefix(bus_db: Database) -> None:
    prefix = bus_db.settings.cache_prefix
    assert bus_db.events.channel_for(TradeExecuted) == f"{prefix}:events:trade_executed"


async def test_async_for_iterates_and_stops_on_close(bus_db: Database) -> None:
    sub = await bus_db.events.subscribe(TradeExecuted).start()
    for n in (1, 2, 3):
        await bus_db.events.publish(trade(n))
    seen = []
    async for event in sub:
        seen.append(event.trade_id)
        if len(seen) == 3:
            await sub.aclose()
    assert seen == [1, 2, 3]


async def test_malformed_messages_are_dropped(settings: Settings) -> None:
    async with Database(settings) as db, db.events.subscribe(TradeExecuted) as sub:
        channel = db.events.channel_for(TradeExecuted)
        await db.redis.publish(channel, b"{not json")
        await db.redis.publish(channel, b'{"trade_id": "x"}')
        await db.events.publish(trade(9))
        assert (await next_event(sub)).trade_id == 9


async def test_publish_after_commit_only_after_a_commit(db: Database) -> None:
    async with db.events.subscribe(TradeExecuted) as sub:
        async with db.unit_of_work() as uow:
            await uow.users.add(UserFactory.build(username="pub"))
            uow.publish_after_commit(trade(1))  # rolled back: never sent
        with pytest.raises(ConflictError):
            async with db.unit_of_work() as uow:
                uow.publish_after_commit(trade(2))
                await uow.users.add(UserFactory.build(username="dup"))
                uow.session.add(UserFactory.build(username="dup"))
                await uow.commit()  # fails: never sent
        async with db.unit_of_work() as uow:
            await uow.users.add(UserFactory.build(username="ok"))
            uow.publish_after_commit(trade(3))
            assert db.events.published == 0  # not before the commit
            await uow.commit()
        assert (await next_event(sub)).trade_id == 3
    assert db.events.published == 1


async def test_subscription_survives_a_killed_connection(settings: Settings) -> None:
    admin = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        async with Database(settings) as db, db.events.subscribe(TradeExecuted) as sub:
            await db.events.publish(trade(1))
            assert (await next_event(sub)).trade_id == 1
            name = f"alpha_data:{settings.cache_prefix}"
            clients = await admin.client_list(_type="pubsub")
            ours = [c["id"] for c in clients if c.get("name") == name]
            assert len(ours) == 1
            await admin.execute_command("CLIENT", "KILL", "ID", ours[0])
            reading = asyncio.ensure_future(next_event(sub, timeout=10))
            n = 2
            while not reading.done():  # events sent while reconnecting are lost
                await db.events.publish(trade(n))
                n += 1
                await asyncio.sleep(0.05)
            assert (await reading).trade_id >= 2
            assert sub.reconnects >= 1
    finally:
        await admin.aclose()


async def test_publishing_with_redis_down_returns_false(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with Database(down) as db:
        assert await db.events.publish(trade()) is False
        assert await db.events.publish(trade()) is False  # the circuit is open: no wait
        assert db.events.failed == 2 and db.events.published == 0


async def test_subscribe_needs_an_event_type(bus_db: Database) -> None:
    with pytest.raises(ValueError):
        bus_db.events.subscribe()


async def test_events_of_one_commit_arrive_in_order_and_none_after_rollback(
    bus_db: Database,
) -> None:
    async with bus_db.events.subscribe(TradeExecuted, AlertRaised) as sub:
        alert = AlertRaised(alert_id=9, title="t", severity="info", source="s")
        sent = trade()
        async with bus_db.unit_of_work() as uow:
            uow.publish_after_commit(trade())
            uow.publish_after_commit(
                AlertRaised(alert_id=1, title="gone", severity="info", source="s")
            )
            await uow.rollback()  # dropped with the rollback
            uow.publish_after_commit(sent)
            uow.publish_after_commit(alert)
            before = bus_db.events.published
            await uow.commit()
        assert bus_db.events.published == before + 2
        got = [await next_event(sub), await next_event(sub)]
        # The outbox numbers each at commit (per aggregate); the rest is what was sent.
        assert [e.model_copy(update={"sequence": 0}) for e in got] == [sent, alert]
        assert all(e.sequence >= 1 for e in got)
        with pytest.raises(asyncio.TimeoutError):
            await next_event(sub, timeout=0.3)
