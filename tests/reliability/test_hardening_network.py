"""A network path that goes silent: typed errors in bounded time, nothing hangs, nothing leaks.

The proxy's blackhole mode drops every byte in both directions while keeping
every socket open (a firewall dropping packets, a hung NAT entry): the server
never sees the statement, so ``statement_timeout`` cannot fire. Before the
client-side ``command_timeout`` the issue's calls were still waiting after
42 s. ``asyncio.wait_for`` below is only a hang guard (generous), never a
timing assertion.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from alpha_data import Database, Settings
from alpha_data.errors import TransientError
from alpha_data.models import User
from alpha_data.services import create_portfolio, get_portfolio_with_positions, record_trade
from tests.reliability.tools import (
    Tally,
    TcpProxy,
    admin_connection,
    private_redis,
    proxied_redis,
    unique,
)

HANG_GUARD = 60.0


async def _pids(db: Database, n: int) -> set[int]:
    """Backend pids of ``n`` connections checked out at once (they then go back to the pool)."""
    async with asyncio.TaskGroup() if hasattr(asyncio, "TaskGroup") else _Group() as group:
        tasks = [group.create_task(_pid(db)) for _ in range(n)]
    return {t.result() for t in tasks}


class _Group:  # Python 3.10: gather instead of TaskGroup
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[int]] = []

    def create_task(self, coro: object) -> asyncio.Task[int]:
        task: asyncio.Task[int] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self.tasks.append(task)
        return task

    async def __aenter__(self) -> _Group:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*self.tasks)


async def _pid(db: Database) -> int:
    async with db.unit_of_work() as uow:
        pid = int((await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        await asyncio.sleep(0.05)  # overlap, so n calls hold n connections
        return pid


async def test_silent_postgres_path_fails_typed_and_drops_dead_connections(
    settings: Settings, truncate_after: None, tally: Tally
) -> None:
    real = make_url(settings.database_url)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    port = await proxy.start()
    db = Database(
        settings.model_copy(
            update={
                "database_url": real.set(port=port).render_as_string(hide_password=False),
                "statement_timeout": 2.0,
                "pool_timeout": 2.0,
                "connect_timeout": 2.0,
                "pool_size": 2,
                "max_overflow": 0,
            }
        )
    )
    try:
        await db.connect()
        portfolio = await create_portfolio(db, name=unique("silent"))
        before = await _pids(db, 2)  # both pool slots hold a live connection

        proxy.blackhole()
        tally.fault("postgres network path silent")
        # Two writes hold both slots of the main pool when the path goes silent;
        # the read runs on the read-only pool (a new connection through the proxy).
        calls = [
            *(
                record_trade(
                    db,
                    portfolio_id=portfolio.id,
                    symbol=symbol,
                    side="buy",
                    quantity=Decimal("1"),
                    price=Decimal("100"),
                )
                for symbol in ("AAPL", "MSFT")
            ),
            get_portfolio_with_positions(db, portfolio.id),
        ]
        outcomes = await asyncio.wait_for(
            asyncio.gather(*calls, return_exceptions=True), HANG_GUARD
        )
        for outcome in outcomes:
            assert isinstance(outcome, TransientError), repr(outcome)
        # The two calls on pooled connections time out client-side; the third
        # waited for a pool slot (pool_timeout) or a new connection (connect_timeout).
        silent = [o for o in outcomes if "no reply from PostgreSQL" in str(o)]
        assert len(silent) >= 2, outcomes
        assert db.pool_status()["checkedout"] == 0
        # A unit of work opened while the path is silent fails the same way (a new
        # connection's handshake is never answered: bounded by connect_timeout).
        with pytest.raises(TransientError):
            await asyncio.wait_for(get_portfolio_with_positions(db, portfolio.id), HANG_GUARD)
        tally.case("silent-path call", len(outcomes) + 1)

        proxy.blackhole(False)
        assert (await get_portfolio_with_positions(db, portfolio.id)) is not None
        after = await _pids(db, 2)
        assert not before & after, "a connection that went silent was handed out again"
        assert db.pool_status()["checkedout"] == 0
    finally:
        await db.close()
        await proxy.stop()
    async with admin_connection(settings.database_url) as conn:
        trades = await conn.fetchval(
            "SELECT count(*) FROM trades WHERE portfolio_id = $1", portfolio.id
        )
    assert trades == 0  # the INSERT never reached the server
    tally.rows_verified("silent-path trades", 1)


async def test_silent_redis_path_serves_reads_from_postgres_without_hanging(
    settings: Settings, truncate_after: None, tally: Tally
) -> None:
    async with private_redis() as redis_url:
        proxy, proxied = await proxied_redis(redis_url)
        db = Database(
            settings.model_copy(update={"redis_url": proxied, "redis_socket_timeout": 0.25})
        )
        try:
            await db.connect()
            async with db.unit_of_work() as uow:
                user = await uow.users.add(
                    User(username=unique("rb"), email=f"{unique('rb')}@x.io", password_hash="h")
                )
                await uow.commit()
            async with db.unit_of_work(read_only=True) as uow:
                assert await uow.users.get(user.id) is not None  # cached now
                assert await uow.users.get_by_username(user.username) is not None

            proxy.blackhole()
            tally.fault("redis network path silent")

            async def read_and_write() -> None:
                for _ in range(3):
                    async with db.unit_of_work(read_only=True) as uow:
                        got = await uow.users.get(user.id)
                        assert got is not None and got.username == user.username
                        assert await uow.users.get_by_username(user.username) is not None
                async with db.unit_of_work() as uow:  # a write: invalidation waits in the outbox
                    loaded = await uow.users.get_one(user.id)
                    loaded.is_active = False
                    await uow.commit()
                async with db.unit_of_work(read_only=True) as uow:
                    got = await uow.users.get(user.id, cached=False)
                    assert got is not None and got.is_active is False

            await asyncio.wait_for(read_and_write(), HANG_GUARD)
            health = await asyncio.wait_for(db.health(), HANG_GUARD)
            assert health.database.ok and not health.cache.ok
            assert db.pool_status()["checkedout"] == 0
            tally.case("silent-redis call", 8)
        finally:
            proxy.blackhole(False)
            await db.close()
            await proxy.stop()
