"""Durable consumers under faults: killed mid-batch, connections killed, Redis restarted.

Each scenario asserts what a consumer relies on: every delivered event is
consumed (0 lost), a duplicate is only ever the same ``event_id`` again,
and each aggregate's order is restorable from ``sequence`` (1..n, no gaps).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import redis.asyncio as redis_asyncio

from alpha_data import Settings
from alpha_data.cache.backends import CacheUnavailable
from alpha_data.cache.redis_backend import RedisBackend
from alpha_data.events import Consumer, EventBus, TradeExecuted
from tests.reliability.tools import Tally
from tests.streams_tools import ThrowawayRedis, throwaway_redis
from tests.support import REDIS_URL

WHEN = datetime(2026, 1, 2, tzinfo=timezone.utc)
PORTFOLIOS = 4

#: A consumer process: reads ``n`` deliveries, acks the first ``acked``, prints the ids it
#: read, says READY and waits to be killed (SIGKILL: no cleanup, no ack).
CHILD = """
import asyncio, sys
from alpha_data.cache.redis_backend import RedisBackend
from alpha_data.events import EventBus, TradeExecuted

async def main(url, prefix, n, acked):
    bus = EventBus(RedisBackend(url, socket_timeout=0.5), prefix=prefix)
    consumer = await bus.consume("workers", TradeExecuted, consumer="doomed", batch=n,
                                 block=0.2, idle=30).start()
    for i in range(n):
        delivery = await consumer.__anext__()
        if i < acked:
            await delivery.ack()
        print("READ", delivery.event.event_id, flush=True)
    print("READY", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def trades(n: int, start: int = 0) -> list[TradeExecuted]:
    """``n`` trades over PORTFOLIOS portfolios, sequenced per portfolio as the outbox does."""
    out = []
    for i in range(start, start + n):
        out.append(
            TradeExecuted(
                trade_id=i,
                portfolio_id=i % PORTFOLIOS,
                symbol="AAPL",
                side="buy",
                quantity=Decimal(1),
                price=Decimal(100),
                executed_at=WHEN,
                sequence=i // PORTFOLIOS + 1,
            )
        )
    return out


def check_complete(sent: list[TradeExecuted], consumed: list[TradeExecuted]) -> None:
    """0 lost, duplicates only as the same event, per-portfolio order restorable."""
    by_id = {e.event_id: e for e in sent}
    assert {e.event_id for e in consumed} == set(by_id), "an event was lost"
    for event in consumed:
        assert event == by_id[event.event_id], "a duplicate differs from its original"
    sequences: dict[int, set[int]] = defaultdict(set)
    for event in consumed:
        sequences[event.portfolio_id].add(event.sequence)
    for portfolio, seen in sequences.items():
        expected = [e.sequence for e in sent if e.portfolio_id == portfolio]
        assert sorted(seen) == sorted(expected) == list(range(1, len(expected) + 1))


async def drain(
    consumer: Consumer[TradeExecuted], want: set[str], timeout: float
) -> list[TradeExecuted]:
    """Consume and ack until every id in ``want`` was seen."""
    got: list[TradeExecuted] = []

    async def run() -> None:
        async for delivery in consumer:
            got.append(delivery.event)
            await delivery.ack()
            if want <= {e.event_id for e in got}:
                return

    await asyncio.wait_for(run(), timeout)
    return got


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[EventBus]:
    prefix = settings.cache_prefix
    backend = RedisBackend(REDIS_URL, socket_timeout=0.5)
    made = EventBus(backend, prefix=prefix)
    try:
        yield made
    finally:
        await made.close()
        await backend.close()


async def spawn_child(
    url: str, prefix: str, n: int, acked: int
) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, prefix, str(n), str(acked),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert proc.stdout is not None
    read: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        assert line, "the consumer process ended early"
        if line[0] == "READY":
            return proc, read
        read.append(line[1])


async def test_a_consumer_killed_mid_batch_loses_nothing(bus: EventBus, tally: Tally) -> None:
    sent = trades(40)
    await bus.deliver(sent)
    proc, read = await spawn_child(REDIS_URL, bus.prefix, n=20, acked=8)
    proc.send_signal(signal.SIGKILL)  # after reading 20, acking 8
    await proc.wait()
    tally.fault("consumer SIGKILL mid-batch")
    assert read == [e.event_id for e in sent[:20]]
    async with bus.consume("workers", TradeExecuted, consumer="heir", block=0.1, idle=0.5) as heir:
        got = await drain(heir, {e.event_id for e in sent[8:]}, timeout=30)
        assert heir.claimed == 12  # exactly the read-but-unacknowledged ones
    check_complete(sent, [*sent[:8], *got])
    assert not {e.event_id for e in sent[:8]} & {e.event_id for e in got}  # acked stay acked
    tally.rows_verified("stream events", len(sent))


async def test_consumer_resumes_after_its_connections_are_killed(tally: Tally) -> None:
    async with throwaway_redis() as server:
        await consume_through_faults(server, restart=False, tally=tally)


async def test_consumer_resumes_after_redis_restarts(tally: Tally) -> None:
    async with throwaway_redis(appendonly=True) as server:
        await consume_through_faults(server, restart=True, tally=tally)


async def consume_through_faults(server: ThrowawayRedis, *, restart: bool, tally: Tally) -> None:
    """Deliver 300 events (re-delivering on failure, as the outbox does) while a consumer
    reads; three times: kill every normal connection, or SIGKILL and restart Redis."""
    backend = RedisBackend(server.url, socket_timeout=0.5)
    bus = EventBus(backend, prefix="{faults}")
    sent = trades(300)
    try:
        async with bus.consume("g", TradeExecuted, block=0.2, idle=1.0) as consumer:
            reading = asyncio.ensure_future(drain(consumer, {e.event_id for e in sent}, 60))
            for i in range(0, len(sent), 10):
                if i in (60, 150, 240):
                    await inject(server, restart)
                    tally.fault("redis restart" if restart else "CLIENT KILL TYPE normal")
                await deliver_until_accepted(bus, sent[i : i + 10])
                await asyncio.sleep(0.01)
            got = await reading
            assert consumer.reconnects >= 1
        check_complete(sent, got)
        tally.rows_verified("stream events", len(sent))
    finally:
        await bus.close()
        await backend.close()


async def inject(server: ThrowawayRedis, restart: bool) -> None:
    if restart:
        await server.kill()
        await asyncio.sleep(0.3)
        await server.start()
        return
    admin = redis_asyncio.Redis.from_url(server.url)
    try:
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    finally:
        await admin.aclose()


async def deliver_until_accepted(bus: EventBus, events: list[TradeExecuted]) -> None:
    for _ in range(200):
        with contextlib.suppress(CacheUnavailable):
            await bus.deliver(events)
            return
        await asyncio.sleep(0.05)
    raise AssertionError("Redis never took the events back")
