"""Durable events: identity and registry, deliver to Redis Streams (and memory://)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import pytest
import redis.asyncio as redis_asyncio

from alpha_data import Database, Settings
from alpha_data.cache.backends import CacheUnavailable
from alpha_data.cache.memory_backend import MemoryBackend
from alpha_data.errors import InvalidDataError
from alpha_data.events import (
    AlertRaised,
    Consumer,
    Deduplicator,
    Delivery,
    Event,
    PositionChanged,
    TradeExecuted,
    Verdict,
    event_type,
)
from tests.streams_tools import throwaway_redis
from tests.support import REDIS_URL

T = TypeVar("T")
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


# -- consume -------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "memory"])
async def any_db(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Database]:
    if request.param == "memory":
        settings = on(settings, "memory://")
    async with Database(settings) as database:
        yield database


async def within(aw: Coroutine[Any, Any, T], timeout: float) -> T | None:
    """``aw``'s result, or None after ``timeout`` s (``aw`` cancelled).

    Not ``asyncio.wait_for``: that waits for ever for a cancelled read that
    swallowed its cancel; here that fails the test within 5 s instead.
    """
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if done:
        return task.result()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "a cancelled consumer read went on (it swallowed the cancellation)"
    if not task.cancelled():  # the read won the race: return its result
        return task.result()
    return None


async def take(consumer: Consumer[Any], n: int, timeout: float = 10.0) -> list[Delivery[Any]]:
    async def collect() -> list[Delivery[Any]]:
        return [await consumer.__anext__() for _ in range(n)]

    got = await within(collect(), timeout)
    assert got is not None, f"fewer than {n} deliveries within {timeout}s"
    return got


async def nothing_more(consumer: Consumer[Any], wait: float = 0.5) -> bool:
    return await within(consumer.__anext__(), wait) is None


async def test_consume_delivers_typed_events_and_ack_removes_them(any_db: Database) -> None:
    bus = any_db.events
    sent = [trade(n, sequence=n) for n in (1, 2, 3)]
    async with bus.consume("g", TradeExecuted, consumer="a", block=0.2) as consumer:
        await bus.deliver(sent)
        got = await take(consumer, 3)
        assert [d.event for d in got] == sent
        assert all(type(d.event) is TradeExecuted for d in got)
        assert [d.event.event_id for d in got] == [e.event_id for e in sent]
        assert all([await d.ack() for d in got])
        assert consumer.acked == 3
    # acknowledged: a later consumer of the group gets nothing, even after the idle time
    async with bus.consume("g", TradeExecuted, consumer="b", block=0.1, idle=0.05) as other:
        await asyncio.sleep(0.1)
        assert await nothing_more(other)
        assert other.claimed == 0


async def test_unacknowledged_deliveries_are_claimed_by_another_consumer(any_db: Database) -> None:
    bus = any_db.events
    sent = [trade(n) for n in range(5)]
    await bus.deliver(sent)
    first = await bus.consume("g", TradeExecuted, consumer="a", block=0.1, idle=0.3).start()
    got = await take(first, 5)
    await got[0].ack()
    await got[1].ack()
    await first.aclose()  # dies with 3 unacknowledged
    async with bus.consume("g", TradeExecuted, consumer="b", block=0.1, idle=0.3) as second:
        again = await take(second, 3)
        assert [d.event.event_id for d in again] == [e.event_id for e in sent[2:]]
        assert second.claimed == 3
        for d in again:
            assert await d.ack()
        assert await nothing_more(second, 0.8)  # nothing pending any more


async def test_two_groups_each_get_every_event(any_db: Database) -> None:
    bus = any_db.events
    async with (
        bus.consume("billing", TradeExecuted, block=0.1) as billing,
        bus.consume("risk", TradeExecuted, block=0.1) as risk,
    ):
        sent = [trade(n) for n in range(4)]
        await bus.deliver(sent)
        for consumer in (billing, risk):
            got = await take(consumer, 4)
            assert [d.event for d in got] == sent


async def test_consumers_of_one_group_share_the_work(any_db: Database) -> None:
    bus = any_db.events
    async with (
        bus.consume("g", TradeExecuted, consumer="a", batch=2, block=0.1) as a,
        bus.consume("g", TradeExecuted, consumer="b", batch=2, block=0.1) as b,
    ):
        await bus.deliver([trade(n) for n in range(4)])
        got = await take(a, 2) + await take(b, 2)
        assert sorted(d.event.trade_id for d in got) == [0, 1, 2, 3]


async def test_one_consumer_reads_several_event_types(any_db: Database) -> None:
    bus = any_db.events
    alert = AlertRaised(alert_id=1, title="t", severity="info", source="s")
    changed = PositionChanged(portfolio_id=7, symbol="X", quantity=Decimal(1), entry_price=None)
    async with bus.consume("g", TradeExecuted, AlertRaised, block=0.1) as consumer:
        await bus.deliver([trade(1), changed, alert])
        got = await take(consumer, 2)
        assert {type(d.event) for d in got} == {TradeExecuted, AlertRaised}
        assert await nothing_more(consumer)  # PositionChanged was not asked for


async def test_history_false_starts_at_the_next_event(any_db: Database) -> None:
    bus = any_db.events
    await bus.deliver([trade(1)])
    async with bus.consume("late", TradeExecuted, history=False, block=0.1) as late:
        await bus.deliver([trade(2)])
        assert [d.event.trade_id for d in await take(late, 1)] == [2]
    async with bus.consume("all", TradeExecuted, block=0.1) as everything:
        assert [d.event.trade_id for d in await take(everything, 2)] == [1, 2]


async def test_malformed_entries_are_dropped_and_acknowledged(
    redis_db: Database, admin: redis_asyncio.Redis
) -> None:
    bus = redis_db.events
    stream = bus.stream_for(TradeExecuted)
    async with bus.consume("g", TradeExecuted, block=0.1) as consumer:
        await admin.xadd(stream, {"id": "x", "seq": "0", "data": b"{not json"})
        await admin.xadd(stream, {"id": "y"})
        await bus.deliver([trade(9)])
        assert (await take(consumer, 1))[0].event.trade_id == 9
        assert consumer.dropped == 2
        pending = await admin.xpending(stream, "g")
        assert pending["pending"] == 1  # only the good one, not yet acked


async def test_the_consumer_survives_a_killed_connection(
    redis_db: Database, admin: redis_asyncio.Redis
) -> None:
    bus = redis_db.events
    name = f"alpha_data:{redis_db.settings.cache_prefix}"
    async with bus.consume("g", TradeExecuted, block=0.2, idle=60) as consumer:
        await bus.deliver([trade(1)])
        assert (await take(consumer, 1))[0].event.trade_id == 1
        reading = asyncio.ensure_future(take(consumer, 1))
        await asyncio.sleep(0.05)
        killed = 0
        for client in await admin.client_list():
            if client.get("name") == name and "xreadgroup" in client.get("cmd", ""):
                killed += await admin.execute_command("CLIENT", "KILL", "ID", client["id"])
        assert killed == 1
        await bus.deliver([trade(2)])
        assert (await reading)[0].event.trade_id == 2
        assert consumer.reconnects >= 1


@pytest.mark.parametrize(
    "kwargs",
    [{"batch": 0}, {"block": 0}, {"idle": -1}, {"consumer": "has space"}, {"consumer": ""}],
)
async def test_bad_consume_arguments_are_refused(redis_db: Database, kwargs: Any) -> None:
    with pytest.raises(InvalidDataError):
        redis_db.events.consume("g", TradeExecuted, **kwargs)
    with pytest.raises(InvalidDataError):
        redis_db.events.consume("bad group", TradeExecuted)
    with pytest.raises(InvalidDataError):
        redis_db.events.consume("g")


async def test_close_ends_iteration(any_db: Database) -> None:
    consumer = await any_db.events.consume("g", TradeExecuted, block=0.1).start()
    await any_db.events.deliver([trade(1)])
    seen = []
    async for delivery in consumer:
        seen.append(delivery.event.trade_id)
        await delivery.ack()
        await consumer.aclose()
    assert seen == [1]


# -- the idempotent-consumer helper --------------------------------------------------------


def test_deduplicator_judges_ids_and_sequences() -> None:
    dedupe = Deduplicator()
    first, second = trade(1, sequence=1), trade(2, sequence=2)
    assert dedupe.check(first) is Verdict.NEW
    assert dedupe.check(first) is Verdict.NEW  # check records nothing
    dedupe.remember(second)
    assert dedupe.check(second) is Verdict.DUPLICATE
    assert dedupe.check(first) is Verdict.STALE  # a later one of portfolio 7 was handled
    assert dedupe.check(trade(3, portfolio=8, sequence=1)) is Verdict.NEW  # other aggregate
    assert dedupe.last_sequence("portfolio:7") == 2
    assert dedupe.last_sequence("portfolio:8") == 0
    assert dedupe.check(trade(4)) is Verdict.NEW  # unsequenced events are never stale


def test_deduplicator_forgets_the_oldest_ids_beyond_its_bound() -> None:
    dedupe = Deduplicator(max_ids=2)
    events = [trade(n) for n in range(3)]
    for event in events:
        dedupe.remember(event)
    assert dedupe.check(events[0]) is Verdict.NEW
    assert dedupe.check(events[2]) is Verdict.DUPLICATE
    with pytest.raises(InvalidDataError):
        Deduplicator(max_ids=0)


async def test_handle_runs_each_event_once_and_acks_only_after_success(
    any_db: Database,
) -> None:
    bus = any_db.events
    dedupe = Deduplicator()
    handled: list[int] = []
    fail_once = {2}

    async def handler(event: TradeExecuted) -> None:
        if event.trade_id in fail_once:
            fail_once.discard(event.trade_id)
            raise RuntimeError("handler failed")
        handled.append(event.trade_id)

    sent = [trade(n, sequence=n) for n in (1, 2, 3)]
    async with bus.consume("g", TradeExecuted, block=0.1, idle=0.3) as consumer:
        await bus.deliver([*sent, sent[0]])  # the outbox sent #1 twice (same event_id)
        verdicts = []
        while len(handled) < 3:
            delivery = await take(consumer, 1)
            try:
                verdicts.append(await dedupe.handle(delivery[0], handler))
            except RuntimeError:
                verdicts.append(None)  # not acked: comes back after the idle time
    assert handled == [1, 3, 2]
    assert verdicts == [Verdict.NEW, None, Verdict.NEW, Verdict.DUPLICATE, Verdict.STALE]
    assert dedupe.duplicates == 1 and consumer.claimed == 1


async def test_drop_stale_skips_older_snapshots(any_db: Database) -> None:
    dedupe = Deduplicator(drop_stale=True)
    newer, older = trade(2, sequence=2), trade(1, sequence=1)
    seen: list[int] = []

    async def handler(event: TradeExecuted) -> None:
        seen.append(event.sequence)

    async with any_db.events.consume("g", TradeExecuted, block=0.1) as consumer:
        await any_db.events.deliver([newer, older])
        for delivery in await take(consumer, 2):
            await dedupe.handle(delivery, handler)
        assert seen == [2] and dedupe.stale == 1
        assert await nothing_more(consumer)  # both acknowledged


async def test_a_task_waiting_on_a_consumer_can_be_cancelled(any_db: Database) -> None:
    consumer = await any_db.events.consume("g", TradeExecuted, block=1.0).start()
    waiting = asyncio.ensure_future(consumer.__anext__())
    await asyncio.sleep(0.2)  # blocked in XREADGROUP
    waiting.cancel()
    done, _ = await asyncio.wait({waiting}, timeout=5)
    assert done and waiting.cancelled()  # not swallowed into a reconnect loop
    await consumer.aclose()
