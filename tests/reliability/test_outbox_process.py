"""Outbox across processes (issue 16): the committer dies or leaves, another Database delivers.

* A subprocess commits a trade and is SIGKILLed right after COMMIT, before
  it delivered anything: a live Database's relay invalidates the cache and
  appends TradeExecuted/PositionChanged (sequenced) to the streams.
* A user is disabled while Redis refuses writes (``CLIENT PAUSE WRITE`` on a
  redis-server of the test's own) and the committing Database closes
  cleanly: another Database refuses the API key at once (authentication
  reads PostgreSQL) and its cached ``users.get`` is fresh once Redis is back.
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal

import pytest

from alpha_data import Database, Settings
from alpha_data.errors import AuthenticationError
from alpha_data.events import PositionChanged, TradeExecuted
from alpha_data.services import (
    authenticate_api_key,
    create_user,
    get_cached_portfolio,
    issue_api_key,
)
from tests.reliability.outbox_tools import (
    assert_restorable,
    backlog,
    committed_trades,
    eventually,
    portfolio_ids,
    refused_redis_url,
    stream_events,
    with_settings,
)
from tests.streams_tools import throwaway_redis
from tests.support import ROOT

pytestmark = pytest.mark.usefixtures("truncate_after")

#: Commits one trade; dies by SIGKILL where the fast path would deliver it.
CHILD = """
import asyncio, os, signal, sys
from alpha_data import Database, Settings
from alpha_data.outbox import Outbox
from alpha_data.services import record_trade

async def die(self, recorded):
    os.kill(os.getpid(), signal.SIGKILL)

async def main():
    Outbox.deliver = die
    db = Database(Settings(outbox_relay=False, _env_file=None))
    await db.connect()
    await record_trade(db, portfolio_id=int(sys.argv[1]), symbol="AAPL", side="buy",
                       quantity="3", price="10")

asyncio.run(main())
"""

#: Stale-read bound once Redis accepts writes: grace (1 s) + relay backoff/poll (< 1 s).
BOUND = 2.0


async def drained(settings: Settings, db: Database) -> None:
    """The relay deletes what it delivered in the claiming transaction (commits just after)."""

    async def empty() -> bool:
        return await backlog(settings.database_url, db.outbox.prefix) == 0

    await eventually(empty, within=2.0)


async def test_kill_9_after_commit_a_live_relay_delivers(settings: Settings, tally) -> None:
    live = Database(settings)
    await live.connect()
    try:
        (pid,) = await portfolio_ids(live, 1)
        before = await get_cached_portfolio(live, pid)
        assert before is not None and before.positions == []  # now cached (empty)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ALPHA_DATA_DATABASE_URL": settings.database_url,
            "ALPHA_DATA_REDIS_URL": settings.redis_url,
            "ALPHA_DATA_CACHE_PREFIX": settings.cache_prefix,
        }
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, str(pid), env=env)
        assert await child.wait() == -9  # killed after COMMIT, before delivering
        tally.fault("kill -9 after COMMIT")
        (trade_id,) = await committed_trades(settings.database_url)

        async def fresh() -> bool:
            got = await get_cached_portfolio(live, pid)
            return got is not None and [p.quantity for p in got.positions] == [Decimal(3)]

        waited = await eventually(fresh, within=settings.outbox_grace + BOUND + 3)
        print(f"\nkill -9: cached portfolio fresh {waited:.2f} s after the child died")
        trades = await stream_events(live, TradeExecuted)
        changes = await stream_events(live, PositionChanged)
        assert [t.trade_id for t in trades] == [trade_id]
        assert [c.quantity for c in changes] == [Decimal(3)]
        assert_restorable(trades, changes)
        await drained(settings, live)

        async def counted() -> bool:  # counted once the relay task saw its COMMIT return
            return live.stats().outbox.redelivered == 1

        await eventually(counted, within=2.0)
    finally:
        await live.close()


async def test_user_disabled_while_redis_pauses_writes_is_refused_elsewhere(
    settings: Settings, tally
) -> None:
    async with throwaway_redis() as server:
        shared = with_settings(settings, redis_url=server.url)
        writer, other = Database(shared), Database(shared)
        await writer.connect()
        await other.connect()
        try:
            user = await create_user(
                other, username="dis", email="dis@example.com", password="pw-123456789"
            )
            _, raw = await issue_api_key(other, user_id=user.id, name="k", permissions=["read"])
            assert (await authenticate_api_key(other, raw)).user_id == user.id
            async with other.unit_of_work(read_only=True) as uow:
                assert (await uow.users.get(user.id)).is_active  # cached now
            await writer.redis.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
            tally.fault("redis CLIENT PAUSE WRITE")
            async with writer.unit_of_work() as uow:
                (await uow.users.get_one(user.id)).is_active = False
                await uow.commit()
            await writer.close()  # leaves cleanly; the row stays for the relays
            with pytest.raises(AuthenticationError):
                await authenticate_api_key(other, raw)

            async def fresh() -> bool:
                async with other.unit_of_work(read_only=True) as uow:
                    got = await uow.users.get(user.id)
                return got is not None and not got.is_active

            await eventually(fresh, within=1.0 + BOUND + 3)
            await drained(settings, other)
        finally:
            await writer.close()
            await other.close()


async def test_alpha_data_relay_process_delivers_what_a_writer_left(settings: Settings) -> None:
    writer = Database(
        with_settings(settings, redis_url=await refused_redis_url(settings), outbox_relay=False)
    )
    await writer.connect()
    try:
        await portfolio_ids(writer, 1)
        assert writer.stats().outbox.deferred == 1
    finally:
        await writer.close()
    assert await backlog(settings.database_url, settings.cache_prefix) == 1
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ALPHA_DATA_DATABASE_URL": settings.database_url,
        "ALPHA_DATA_REDIS_URL": settings.redis_url,
        "ALPHA_DATA_CACHE_PREFIX": settings.cache_prefix,
    }
    relay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from alpha_data.cli import main; main()",  # the `alpha-data` console script
        "relay",
        "--seconds",
        "3",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await relay.communicate()
    assert relay.returncode == 0, err.decode()[-500:]
    assert "delivered 1 rows; backlog 0" in out.decode()
    assert "outbox relay delivered 1 rows" in err.decode()  # the INFO line, no payload
    assert await backlog(settings.database_url, settings.cache_prefix) == 0
