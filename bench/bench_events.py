"""Benchmark of the durable event path on loopback, against raw redis-py doing the same.

* deliver → consume latency: one event at a time, ``bus.deliver([event])``
  (XADD + PUBLISH, one MULTI round trip) until a ``db.events.consume``
  consumer in the same process has it parsed as a typed event; p50 and p99.
  Baseline: raw ``XADD`` and a raw ``XREADGROUP BLOCK`` loop (bytes only).
* consume throughput: events/s one consumer reads, parses and acknowledges
  (one XACK per delivery, as ``await delivery.ack()`` does), from a stream
  filled beforehand. Baseline: raw ``XREADGROUP COUNT`` + per-entry ``XACK``.
* pub/sub latency (``publish`` → ``subscribe``), for the side-by-side in
  docs/events.md.

Ratios are ours / baseline (latency: medians; throughput: ms per event).

    python bench/bench_events.py [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import redis.asyncio as redis_asyncio

from alpha_data import Database, Settings
from alpha_data.events import TradeExecuted
from bench.harness import percentile
from bench.setup import REDIS_URL

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _trade(n: int) -> TradeExecuted:
    return TradeExecuted(
        trade_id=n,
        portfolio_id=1,
        symbol="AAPL",
        side="buy",
        quantity=Decimal("1.5"),
        price=Decimal("100.25"),
        executed_at=WHEN,
        sequence=n,
    )


async def _latencies(
    send: Callable[[int], Awaitable[None]], got: asyncio.Queue[int], n: int
) -> list[float]:
    """ms from before ``send(i)`` until the receiver put ``i`` on ``got``."""
    out = []
    for i in range(n):
        started = time.perf_counter()
        await send(i)
        while await asyncio.wait_for(got.get(), 60) != i:  # fail loudly, never hang
            pass
        out.append((time.perf_counter() - started) * 1000)
    return out


async def _ours_latency(db: Database, n: int) -> list[float]:
    got: asyncio.Queue[int] = asyncio.Queue()
    async with db.events.consume("bench", TradeExecuted, block=1.0, history=False) as consumer:

        async def receive() -> None:
            async for delivery in consumer:
                got.put_nowait(delivery.event.trade_id)
                await delivery.ack()

        task = asyncio.create_task(receive())
        try:
            return await _latencies(lambda i: db.events.deliver([_trade(i)]), got, n)
        finally:
            await consumer.aclose()  # the loop ends after the read in flight
            await asyncio.wait_for(task, 10)


async def _raw_latency(
    client: redis_asyncio.Redis, reader: redis_asyncio.Redis, key: str, n: int
) -> list[float]:
    await client.xgroup_create(key, "bench", id="$", mkstream=True)
    got: asyncio.Queue[int] = asyncio.Queue()
    body = _trade(0).model_dump_json().encode()

    stop = asyncio.Event()

    async def receive() -> None:
        while not stop.is_set():
            reply = await reader.xreadgroup("bench", "raw", {key: ">"}, count=100, block=100)
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    got.put_nowait(int(fields[b"n"]))
                    await reader.xack(key, "bench", entry_id)

    async def send(i: int) -> None:
        await client.xadd(key, {"n": str(i), "data": body})

    task = asyncio.create_task(receive())
    try:
        return await _latencies(send, got, n)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _pubsub_latency(db: Database, n: int) -> list[float]:
    got: asyncio.Queue[int] = asyncio.Queue()

    async def send(i: int) -> None:
        await db.events.publish(_trade(i))

    async with db.events.subscribe(TradeExecuted) as sub:

        async def receive() -> None:
            async for event in sub:
                got.put_nowait(event.trade_id)

        task = asyncio.create_task(receive())
        try:
            return await _latencies(send, got, n)
        finally:
            await sub.aclose()
            await asyncio.wait_for(task, 10)


async def _ours_throughput(db: Database, n: int) -> float:
    """Seconds one consumer takes to read, parse and ack ``n`` stored events."""
    for start in range(0, n, 500):
        await db.events.deliver([_trade(i) for i in range(start, min(n, start + 500))])
    started = time.perf_counter()
    seen = 0
    async with db.events.consume("throughput", TradeExecuted, batch=100, block=0.5) as consumer:
        while seen < n:
            delivery = await asyncio.wait_for(consumer.__anext__(), 60)
            await delivery.ack()
            seen += 1
    return time.perf_counter() - started


async def _raw_throughput(client: redis_asyncio.Redis, key: str, n: int) -> float:
    body = _trade(0).model_dump_json().encode()
    for start in range(0, n, 500):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 500)):
                pipe.xadd(key, {"id": uuid.uuid4().hex, "seq": str(i), "data": body})
            await pipe.execute()
    await client.xgroup_create(key, "throughput", id="0", mkstream=True)
    started = time.perf_counter()
    seen = 0
    while seen < n:
        reply = await client.xreadgroup("throughput", "raw", {key: ">"}, count=100, block=500)
        for _, entries in reply or ():
            for entry_id, _fields in entries:
                await client.xack(key, "throughput", entry_id)
                seen += 1
    return time.perf_counter() - started


def _latency_row(name: str, ours: list[float], base: list[float], baseline: str) -> dict[str, Any]:
    ours_p50, base_p50 = percentile(ours, 0.5), percentile(base, 0.5)
    return {
        "name": name,
        "baseline": baseline,
        "ours_median_ms": round(ours_p50, 4),
        "ours_p95_ms": round(percentile(ours, 0.95), 4),
        "baseline_median_ms": round(base_p50, 4),
        "baseline_p95_ms": round(percentile(base, 0.95), 4),
        "ratio": round(ours_p50 / base_p50, 3),
        "goal": "report",
        "note": f"p99 ours {percentile(ours, 0.99):.3f} ms, "
        f"baseline {percentile(base, 0.99):.3f} ms; n={len(ours)}",
    }


async def run(url: str, *, quick: bool) -> list[dict[str, Any]]:
    """The three rows: stream latency, pub/sub latency, consume throughput."""
    n, bulk = (200, 2_000) if quick else (2_000, 20_000)
    prefix = f"bench_events_{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=url, redis_url=REDIS_URL, cache_prefix=prefix, event_stream_maxlen=0
    )
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    reader = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        async with Database(settings) as db:
            ours = await _ours_latency(db, n)
            base = await _raw_latency(client, reader, f"{prefix}:raw:latency", n)
            pubsub = await _pubsub_latency(db, n)
            ours_s = await _ours_throughput(db, bulk)
        base_s = await _raw_throughput(client, f"{prefix}:raw:throughput", bulk)
    finally:
        async for key in client.scan_iter(match=f"{prefix}:*", count=500):
            await client.unlink(key)
        await client.aclose()
        await reader.aclose()
    throughput = {
        "name": f"consume + ack throughput ({bulk} events, batch 100)",
        "baseline": "raw XREADGROUP COUNT 100 + XACK each",
        "ours_median_ms": round(ours_s * 1000 / bulk, 4),
        "baseline_median_ms": round(base_s * 1000 / bulk, 4),
        "ratio": round(ours_s / base_s, 3),
        "goal": "report",
        "note": f"ours {bulk / ours_s:,.0f} events/s, raw {bulk / base_s:,.0f} events/s",
    }
    return [
        _latency_row("deliver -> consume latency", ours, base, "raw XADD -> XREADGROUP BLOCK"),
        _latency_row("publish -> subscribe latency", pubsub, base, "raw XADD -> XREADGROUP BLOCK"),
        throughput,
    ]


async def _main(quick: bool) -> None:
    from rich.console import Console

    from bench.run import _from_dict, print_table
    from bench.setup import bench_database

    async with bench_database() as url:
        rows = await run(url, quick=quick)
    print_table([_from_dict(r) for r in rows], Console(width=150))
    for row in rows:
        print(row["name"], "|", row.get("note", ""))


if __name__ == "__main__":
    asyncio.run(_main("--quick" in sys.argv[1:]))
