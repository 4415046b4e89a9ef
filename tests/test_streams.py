"""Durable events: identity and registry, deliver to Redis Streams (and memory://)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import ClassVar

import pytest
import redis.asyncio as redis_asyncio

from alpha_data import Database, Settings
from alpha_data.cache.backends import CacheUnavailable
from alpha_data.cache.memory_backend import MemoryBackend
from alpha_data.events import (
    AlertRaised,
    Event,
    PositionChanged,
    TradeExecuted,
    event_type,
)
from tests.streams_tools import throwaway_redis
from tests.support import REDIS_URL

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


class RebalanceDone(Event):
    """An application's own event: registers like the library's."""

    channel: ClassVar[str] = "test_rebalance_done"
    book: str

    def aggregate_key(self) -> str:
        return f"book:{self.book}"


def trade(n: int = 1, *, portfolio: int = 7, sequence: int = 0) -> TradeExecuted:
    return TradeExecuted(
        trade_id=n,
        portfolio_id=portfolio,
        symbol="AAPL",
        side="buy",
        quantity=Decimal("1.5"),
        price=Decimal("190.12345678"),
        executed_at=WHEN,
        sequence=sequence,
    )


def on(settings: Settings, redis_url: str) -> Settings:
    return settings.model_copy(update={"redis_url": redis_url})


@pytest.fixture
async def redis_db(settings: Settings) -> AsyncIterator[Database]:
    async with Database(settings) as database:
        yield database


@pytest.fixture
async def admin() -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


# -- identity and registry -----------------------------------------------------------------


def test_every_event_gets_a_unique_id_and_sequence_zero() -> None:
    ids = {trade().event_id for _ in range(1000)}
    assert len(ids) == 1000
    assert trade().sequence == 0
    sequenced = trade().model_copy(update={"sequence": 4})
    assert sequenced.sequence == 4


def test_aggregate_keys() -> None:
    assert trade(portfolio=12).aggregate_key() == "portfolio:12"
    changed = PositionChanged(portfolio_id=12, symbol="X", quantity=Decimal(1), entry_price=None)
    assert changed.aggregate_key() == "portfolio:12"
    alert = AlertRaised(alert_id=5, title="t", severity="info", source="s")
    assert alert.aggregate_key() == "alert:5"
    assert RebalanceDone(book="eu").aggregate_key() == "book:eu"


def test_registry_knows_library_and_application_events() -> None:
    assert event_type("trade_executed") is TradeExecuted
    assert event_type("position_changed") is PositionChanged
    assert event_type("alert_raised") is AlertRaised
    assert event_type("test_rebalance_done") is RebalanceDone
    with pytest.raises(KeyError, match="no_such_channel"):
        event_type("no_such_channel")


def test_a_second_class_on_a_taken_channel_is_refused() -> None:
    with pytest.raises(TypeError, match=r"already taken by .*TradeExecuted"):

        class Impostor(Event):
            channel: ClassVar[str] = "trade_executed"

    assert event_type("trade_executed") is TradeExecuted


def test_a_channel_that_cannot_be_a_key_part_is_refused() -> None:
    with pytest.raises(TypeError, match="channel must be"):

        class Spaced(Event):
            channel: ClassVar[str] = "has space"


def test_a_base_class_without_its_own_channel_is_not_registered() -> None:
    class Intermediate(Event):
        pass

    assert event_type("trade_executed") is TradeExecuted
    assert Intermediate.channel == "event"


# -- deliver -------------------------------------------------------------------------------


async def test_deliver_appends_to_streams_and_publishes(
    redis_db: Database, admin: redis_asyncio.Redis
) -> None:
    bus = redis_db.events
    first, second = trade(1, sequence=1), trade(2, sequence=2)
    alert = AlertRaised(alert_id=1, title="t", severity="info", source="s", sequence=1)
    async with bus.subscribe(TradeExecuted) as sub:
        await bus.deliver([first, second, alert])
        got = await sub.__anext__()
        assert got == first
    stream = bus.stream_for(TradeExecuted)
    assert stream == f"{redis_db.settings.cache_prefix}:stream:trade_executed"
    entries = await admin.xrange(stream)
    assert [e[1][b"id"].decode() for e in entries] == [first.event_id, second.event_id]
    assert [e[1][b"seq"] for e in entries] == [b"1", b"2"]
    assert TradeExecuted.model_validate_json(entries[1][1][b"data"]) == second
    assert json.loads(entries[0][1][b"data"])["trade_id"] == 1
    assert await admin.xlen(bus.stream_for(AlertRaised)) == 1
    assert bus.published == 3


async def test_deliver_honours_the_retention_setting(
    settings: Settings, admin: redis_asyncio.Redis
) -> None:
    small = settings.model_copy(update={"event_stream_maxlen": 10})
    async with Database(small) as db:
        assert db.events.stream_maxlen == 10
        for n in range(0, 1000, 50):
            await db.events.deliver([trade(n + i) for i in range(50)])
        length = await admin.xlen(db.events.stream_for(TradeExecuted))
    # MAXLEN ~ trims whole macro nodes: about 10, never the 1000 delivered.
    assert 10 <= length < 200


async def test_a_zero_retention_keeps_everything(
    settings: Settings, admin: redis_asyncio.Redis
) -> None:
    async with Database(settings.model_copy(update={"event_stream_maxlen": 0})) as db:
        for n in range(0, 600, 100):
            await db.events.deliver([trade(n + i) for i in range(100)])
        assert await admin.xlen(db.events.stream_for(TradeExecuted)) == 600


async def test_deliver_raises_when_redis_is_down(settings: Settings) -> None:
    async with throwaway_redis() as server, Database(on(settings, server.url)) as db:
        await db.events.deliver([trade(1)])  # reachable: fine
        await server.kill()
        with pytest.raises(CacheUnavailable):
            await db.events.deliver([trade(2)])
        with pytest.raises(CacheUnavailable):  # the breaker does not turn it into a no-op
            await db.events.deliver([trade(3)])
        assert db.events.failed == 2
        await server.start()  # back (empty): the next deliver goes through
        await db.events.deliver([trade(4)])
        client = redis_asyncio.Redis.from_url(server.url)
        try:
            entries = await client.xrange(db.events.stream_for(TradeExecuted))
        finally:
            await client.aclose()
        got = [TradeExecuted.model_validate_json(e[1][b"data"]).trade_id for e in entries]
        assert got == [4]


async def test_deliver_on_memory_keeps_an_in_process_stream(settings: Settings) -> None:
    async with Database(settings.model_copy(update={"redis_url": "memory://"})) as db:
        bus = db.events
        sent = [trade(1), trade(2)]
        async with bus.subscribe(TradeExecuted) as sub:
            await bus.deliver(sent)
            assert (await sub.__anext__()).trade_id == 1
        backend = bus.backend
        assert isinstance(backend, MemoryBackend)
        entries = backend.streams.streams[bus.stream_for(TradeExecuted)]
        assert [dict(fields)["id"].decode() for _, fields in entries] == [e.event_id for e in sent]


async def test_deliver_of_nothing_sends_nothing(redis_db: Database) -> None:
    await redis_db.events.deliver([])
    assert redis_db.events.published == 0
