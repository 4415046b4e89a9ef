"""Helpers of the outbox reliability tests (issue 16): real processes, real servers.

* ``stream_events``: every event of a type in its Redis stream (XRANGE), parsed.
* ``backlog``: outbox rows of a prefix, read on a connection of its own.
* ``CommitReplyDropper``: a PostgreSQL proxy that forwards a COMMIT and cuts
  the connection before its reply reaches the client (the transaction
  commits, the client cannot know).
* ``portfolio_with_trader`` / ``eventually`` / ``assert_restorable``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import redis.asyncio as redis_asyncio

from alpha_data import Database, Settings
from alpha_data.events import Event, PositionChanged, TradeExecuted
from alpha_data.services import create_portfolio
from tests.reliability.tools import TcpProxy, admin_connection

T = TypeVar("T")
E = TypeVar("E", bound=Event)


def with_settings(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with some fields changed (Settings is frozen)."""
    return settings.model_copy(update=changes)


async def refused_redis_url(settings: Settings) -> str:
    """A Redis URL whose port refuses connections (a proxy that was stopped)."""
    port = int(settings.redis_url.split(":")[2].split("/")[0])
    proxy = TcpProxy("127.0.0.1", port)
    await proxy.start()
    await proxy.stop()
    return settings.redis_url.replace(f":{port}/", f":{proxy.port}/")


async def stream_events(db: Database, event_type: type[E]) -> list[E]:
    """Every entry of ``event_type``'s stream, oldest first (duplicates included)."""
    client = redis_asyncio.Redis.from_url(db.settings.redis_url, socket_timeout=10)
    try:  # not db.redis: its 0.5 s timeout is for production, not a loaded test machine
        entries = await client.xrange(db.events.stream_for(event_type))
    finally:
        await client.aclose()
    return [event_type.model_validate_json(fields[b"data"]) for _, fields in entries]


async def backlog(url: str, prefix: str) -> int:
    """Undelivered outbox rows of ``prefix``."""
    async with admin_connection(url) as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM alphapulse.outbox WHERE cache_prefix = $1", prefix
            )
        )


async def committed_trades(url: str) -> set[int]:
    """Ids of every committed trade."""
    async with admin_connection(url) as conn:
        return {int(r["id"]) for r in await conn.fetch("SELECT id FROM trades")}


async def positions(url: str, portfolio_id: int) -> dict[str, Decimal]:
    """The committed positions of a portfolio, by symbol."""
    async with admin_connection(url) as conn:
        rows = await conn.fetch(
            "SELECT symbol, quantity FROM positions WHERE portfolio_id = $1", portfolio_id
        )
    return {r["symbol"]: Decimal(r["quantity"]) for r in rows}


async def portfolio_ids(db: Database, count: int) -> list[int]:
    """``count`` new portfolios."""
    return [(await create_portfolio(db, name=f"p{i}-{time.time_ns()}")).id for i in range(count)]


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until ``check()`` holds; AssertionError if it does not within ``within``."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"still not true after {within} s")
        await asyncio.sleep(0.02)


def assert_restorable(trades: Sequence[TradeExecuted], changes: Sequence[PositionChanged]) -> None:
    """Per portfolio, the distinct events' sequences are exactly 1..n (no gap, no clash)."""
    by_aggregate: dict[str, dict[str, int]] = defaultdict(dict)
    for event in [*trades, *changes]:
        seen = by_aggregate[event.aggregate_key()]
        assert seen.get(event.event_id, event.sequence) == event.sequence  # same id, same seq
        seen[event.event_id] = event.sequence
    for aggregate, numbers in by_aggregate.items():
        assert sorted(numbers.values()) == list(range(1, len(numbers) + 1)), aggregate


def last_quantities(changes: Sequence[PositionChanged]) -> dict[tuple[int, str], Decimal]:
    """The position quantities the events say, replayed in sequence order."""
    out: dict[tuple[int, str], Decimal] = {}
    for event in sorted({e.event_id: e for e in changes}.values(), key=lambda e: e.sequence):
        out[(event.portfolio_id, event.symbol)] = event.quantity
    return out


class CommitReplyDropper(TcpProxy):
    """A PostgreSQL proxy; while ``armed``, the next COMMIT of a trade loses its reply.

    The COMMIT reaches the server (and commits); the connection is then cut
    before a byte of the reply goes back, which the client sees as a lost
    connection with the outcome unknown.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.armed = 0
        self.dropped = 0

    def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> list[Coroutine[Any, Any, None]]:
        cut = asyncio.Event()
        return [
            self._upstream(reader, up_writer, writer, cut),
            self._downstream(up_reader, writer, up_writer, cut),
        ]

    async def _upstream(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, client: Any, cut: asyncio.Event
    ) -> None:
        wrote_trade = False  # only the COMMIT of a transaction that inserted a trade
        try:
            while data := await src.read(65536):
                wrote_trade = wrote_trade or b"INSERT INTO trades" in data
                if self.armed > 0 and wrote_trade and b"COMMIT" in data:
                    self.armed -= 1
                    self.dropped += 1
                    cut.set()  # the reply is not forwarded
                    dst.write(data)
                    await dst.drain()
                    await asyncio.sleep(0.2)  # the server commits meanwhile
                    client.transport.abort()
                    dst.transport.abort()
                    return
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            dst.transport.abort()

    async def _downstream(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: Any, cut: asyncio.Event
    ) -> None:
        try:
            while data := await src.read(65536):
                if cut.is_set():
                    return
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            dst.transport.abort()
