"""A cancelled ``Consumer`` read ends with ``CancelledError``, whenever the cancel lands.

On Python 3.10 and 3.11 ``asyncio.wait_for`` returns the inner result when
the caller is cancelled in the loop iteration in which that result arrives:
the cancellation is lost. A consumer whose blocking read swallowed it went on
reading forever, and ``asyncio.wait_for(consumer.__anext__(), t)`` (which
waits for the cancelled read to end) hung the test run. These tests cancel
reads at many instants around the end of a short ``block`` (where a read
returns), and exactly as a read's empty reply comes back, and require every
one to end cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from alpha_data import Database, Settings
from alpha_data.events import Consumer, TradeExecuted
from tests.streams_tools import throwaway_redis

ROUNDS = 100
TURNS = 8
BLOCK = 0.01  # seconds: a read returns (empty) this often; the cancels land around it


@pytest.fixture(params=["redis", "memory"])
async def any_db(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Database]:
    if request.param == "memory":
        settings = settings.model_copy(update={"redis_url": "memory://"})
    async with Database(settings) as database:
        yield database


def trade(n: int) -> TradeExecuted:
    return TradeExecuted(
        trade_id=n,
        portfolio_id=1,
        symbol="AAPL",
        side="buy",
        quantity=Decimal(1),
        price=Decimal(100),
        executed_at=datetime(2026, 3, 4, tzinfo=timezone.utc),
    )


async def cancel_after(consumer: Consumer[Any], delay: float) -> asyncio.Task[Any]:
    """Start ``__anext__`` in a task, cancel it after ``delay`` s; the task once it ended.

    Fails (instead of hanging) when the read does not end within 5 s.
    """
    task = asyncio.ensure_future(consumer.__anext__())
    await asyncio.sleep(delay)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, f"the consumer swallowed a cancellation after {delay:.4f}s and read on"
    return task


async def test_a_cancelled_read_always_ends_cancelled(any_db: Database) -> None:
    async with any_db.events.consume("g", TradeExecuted, block=BLOCK) as consumer:
        for n in range(ROUNDS):
            task = await cancel_after(consumer, BLOCK * (0.5 + (n % 20) / 10))
            assert task.cancelled(), task.result()
        # the consumer still works after all those cancelled reads
        await any_db.events.deliver([trade(1)])
        delivery = await asyncio.wait_for(consumer.__anext__(), 10)
        assert delivery.event.trade_id == 1


async def blocked_reader(admin: redis_asyncio.Redis) -> str:
    """The id of the client blocked in XREADGROUP (waits until there is one)."""
    for _ in range(500):
        for client in await admin.client_list():
            if client["cmd"] == "xreadgroup" and "b" in client["flags"]:
                return str(client["id"])
        await asyncio.sleep(0.002)
    raise AssertionError("the consumer never blocked in XREADGROUP")


async def test_a_read_cancelled_as_its_empty_reply_arrives_ends_cancelled(
    settings: Settings,
) -> None:
    """``CLIENT UNBLOCK id TIMEOUT`` ends the read (empty) now; the cancel lands 0-7 turns later.

    Deterministic: before the fix the read swallowed the cancel 4 turns in,
    on 3.10 and 3.11. A Redis server of the test's own (its only reader).
    """
    async with throwaway_redis() as server:
        admin = redis_asyncio.Redis.from_url(server.url)
        db = Database(settings.model_copy(update={"redis_url": server.url}))
        # idle=1: a read cancelled as its reply arrived may have taken an entry that
        # only a claim gives back (at least once): the last check below allows for it.
        async with db, admin, db.events.consume("g", TradeExecuted, block=5, idle=1) as consumer:
            for n in range(5 * TURNS):
                task = asyncio.ensure_future(consumer.__anext__())
                reader = await blocked_reader(admin)
                unblock = asyncio.ensure_future(
                    admin.execute_command("CLIENT", "UNBLOCK", reader, "TIMEOUT")
                )
                for _ in range(n % TURNS):
                    await asyncio.sleep(0)
                task.cancel()
                await unblock  # 0 when the cancel already closed the read's connection
                done, _ = await asyncio.wait({task}, timeout=5)
                assert done, f"the consumer swallowed a cancellation {n % TURNS} turns in"
                assert task.cancelled()
            # still a working consumer
            await db.events.deliver([trade(1)])
            delivery = await asyncio.wait_for(consumer.__anext__(), 10)
            assert delivery.event.trade_id == 1
