"""Outbox under Redis and PostgreSQL faults (issue 16), on servers of the test's own.

Each test commits trades through real Databases while a fault is injected,
then checks what a user relies on: every committed trade has exactly one
distinct ``TradeExecuted`` id in its stream (duplicates only with the same
id), the per-portfolio sequences restore the commit order (1..n, no gap), the
replayed positions equal the committed ones, no outbox row is left, and the
cached portfolio is fresh within the bound once Redis accepts writes again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest

from alpha_data import Database, Settings
from alpha_data.errors import TransientError
from alpha_data.events import PositionChanged, TradeExecuted
from alpha_data.services import get_cached_portfolio, record_trade
from tests.reliability.outbox_tools import (
    CommitReplyDropper,
    assert_restorable,
    backlog,
    committed_trades,
    eventually,
    last_quantities,
    portfolio_ids,
    positions,
    stream_events,
    with_settings,
)
from tests.reliability.tools import TcpProxy, admin_connection
from tests.streams_tools import throwaway_redis

pytestmark = pytest.mark.usefixtures("truncate_after")

#: grace (1 s) + relay backoff cap (1 s), plus slack for a loaded CI machine.
WITHIN = 5.0
_ids = itertools.count()


async def trade(db: Database, pid: int, *, external_id: str | None = None) -> int:
    """One buy of 1 AAPL; the trade id."""
    made = await record_trade(
        db,
        portfolio_id=pid,
        symbol="AAPL",
        side="buy",
        quantity="1",
        price="10",
        external_id=external_id,
    )
    return made.id


async def check_delivered(settings: Settings, reader: Database, pids: list[int]) -> float:
    """Exactly-once per id, order restorable, positions replayable, nothing left, cache fresh.

    Returns how long it took until no outbox row was left (printed by the tests).
    """

    async def nothing_left() -> bool:
        return await backlog(settings.database_url, reader.outbox.prefix) == 0

    drained = await eventually(nothing_left, within=WITHIN)
    trades = await stream_events(reader, TradeExecuted)
    changes = await stream_events(reader, PositionChanged)
    committed = await committed_trades(settings.database_url)
    assert {t.trade_id for t in trades} == committed
    assert len({t.event_id for t in trades}) == len(committed)  # duplicates share the id
    assert_restorable(trades, changes)
    replay = last_quantities(changes)
    for pid in pids:
        held = await positions(settings.database_url, pid)
        assert {s: q for (p, s), q in replay.items() if p == pid} == held

        async def fresh(pid: int = pid, held: dict[str, Decimal] = held) -> bool:
            got = await get_cached_portfolio(reader, pid)
            return got is not None and {p.symbol: p.quantity for p in got.positions} == held

        await eventually(fresh, within=WITHIN)
    return drained


async def last_row(settings: Settings) -> int:
    async with admin_connection(settings.database_url) as conn:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM alphapulse.outbox"))


def rows_left_before(settings: Settings, last: int) -> Callable[[], Awaitable[bool]]:
    async def none() -> bool:
        async with admin_connection(settings.database_url) as conn:
            sql = "SELECT count(*) FROM alphapulse.outbox WHERE id <= $1"
            return int(await conn.fetchval(sql, last)) == 0

    return none


async def warm(db: Database, pids: list[int]) -> None:
    for pid in pids:
        assert await get_cached_portfolio(db, pid) is not None


async def test_redis_sigkilled_and_restarted_while_trades_flow(settings: Settings, tally) -> None:
    async with throwaway_redis(appendonly=True) as server:
        shared = with_settings(settings, redis_url=server.url)
        writer, reader = Database(shared), Database(shared)
        await writer.connect()
        await reader.connect()
        try:
            pids = await portfolio_ids(writer, 3)
            await warm(reader, pids)

            async def flow() -> None:
                for i in range(45):
                    await trade(writer, pids[i % 3])
                    await asyncio.sleep(0.02)

            trades = asyncio.create_task(flow())
            await asyncio.sleep(0.3)
            await server.kill()
            tally.fault("redis SIGKILL")
            await asyncio.sleep(0.8)
            await server.start()
            # Rows committed while Redis was down: delivered within the bound of its return.
            took = await eventually(rows_left_before(settings, await last_row(settings)), WITHIN)
            await trades
            assert writer.stats().outbox.deferred > 0  # some commits left to the relays
            await check_delivered(settings, reader, pids)
            print(f"\nredis restart: rows of the outage delivered {took:.2f} s after restart")
        finally:
            await writer.close()
            await reader.close()


async def test_client_pause_write_during_commits(settings: Settings, tally) -> None:
    async with throwaway_redis() as server:
        shared = with_settings(settings, redis_url=server.url)
        writer, reader = Database(shared), Database(shared)
        await writer.connect()
        await reader.connect()
        try:
            pids = await portfolio_ids(writer, 2)
            await warm(reader, pids)
            await writer.redis.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
            resumes = time.monotonic() + 1.0
            tally.fault("redis CLIENT PAUSE WRITE")
            await asyncio.gather(*(trade(writer, pids[i % 2]) for i in range(12)))
            await check_delivered(settings, reader, pids)
            print(
                f"\nCLIENT PAUSE: drained {time.monotonic() - resumes:.2f} s after writes resumed"
            )
        finally:
            await writer.close()
            await reader.close()


async def test_lost_commit_reply_retried_with_the_same_external_id(
    settings: Settings, tally
) -> None:
    url = settings.database_url
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    proxy = CommitReplyDropper(host, int(port or 5432))
    await proxy.start()
    via_proxy = url.replace(host_port, f"127.0.0.1:{proxy.port}")
    writer = Database(with_settings(settings, database_url=via_proxy, outbox_relay=False))
    reader = Database(settings)
    await writer.connect()
    await reader.connect()
    try:
        pids = await portfolio_ids(writer, 2)
        await warm(reader, pids)
        lost = 0
        for i in range(12):
            external = f"ext-{next(_ids)}"
            proxy.armed = 1 if i % 3 == 0 else 0
            for _ in range(3):  # the documented answer to an unknown outcome: retry, same id
                try:
                    await trade(writer, pids[i % 2], external_id=external)
                    break
                except TransientError as exc:
                    assert exc.outcome_unknown
                    lost += 1
        assert lost == proxy.dropped == 4
        tally.fault("COMMIT reply dropped", lost)
        assert len(await committed_trades(url)) == 12
        await check_delivered(settings, reader, pids)
    finally:
        await writer.close()
        await reader.close()
        await proxy.stop()


async def test_two_relays_deliver_each_row_once(settings: Settings, tally) -> None:
    host, port = "127.0.0.1", int(settings.redis_url.split(":")[2].split("/")[0])
    cut = TcpProxy(host, port)
    await cut.start()
    cut_url = settings.redis_url.replace(f":{port}/", f":{cut.port}/")
    await cut.stop()  # the writer's Redis refuses connections: every commit is deferred
    writer = Database(with_settings(settings, redis_url=cut_url, outbox_relay=False))
    await writer.connect()
    relays = [Database(with_settings(settings, outbox_relay=False)) for _ in range(2)]
    try:
        pids = await portfolio_ids(writer, 2)
        await asyncio.gather(*(trade(writer, pids[i % 2]) for i in range(30)))
        assert writer.stats().outbox.deferred >= 30
        tally.fault("redis unreachable for the writer")
        for db in relays:
            await db.connect()
            db.start_relay()
        await check_delivered(settings, relays[0], pids)
        trades = await stream_events(relays[0], TradeExecuted)
        assert len(trades) == 30  # SKIP LOCKED: no row went out twice

        async def counted() -> bool:  # each relay counts once it saw its COMMIT return
            # 30 trades + 2 portfolios, each row delivered by exactly one of the relays
            return sum(db.stats().outbox.redelivered for db in relays) == 32

        await eventually(counted, within=2.0)
    finally:
        await writer.close()
        for db in relays:
            await db.close()
