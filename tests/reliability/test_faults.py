"""Faults: killed backends, refused connections, a Redis that is gone, stalled or lying, timeouts.

Each fault is real: ``pg_terminate_backend`` from an unrelated connection, a
TCP proxy that stops listening and cuts its connections, ``CLIENT PAUSE`` on
a real Redis server (a private redis-server, so that other users of the
shared one are not stalled), garbage written under real cache keys, PostgreSQL's
own ``statement_timeout``. Every test then checks that what was committed is
there, once, and that nothing of what failed is.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from alpha_data import Database, Settings
from alpha_data.errors import DatabaseUnavailableError, TransientError
from alpha_data.models import Portfolio, Position, Trade
from alpha_data.services import (
    create_portfolio,
    get_cached_portfolio,
    record_trade,
    weighted_entry_price,
)
from alpha_data.uow import UnitOfWork
from tests.reliability.tools import (
    Tally,
    TcpProxy,
    admin_connection,
    backend_pid,
    kill_backend,
    leaks,
    listening,
    pool_checked_out,
    private_redis,
    proxied_redis,
    remember_secret,
    run_async_in_listener,
    unique,
)
from tests.support import REDIS_URL, count_statements


async def count_rows(db: Database, model: Any, *where: Any) -> int:
    async with db.unit_of_work(read_only=True) as uow:
        stmt = select(func.count()).select_from(model).where(*where)
        return int((await uow.session.execute(stmt)).scalar_one())


async def held(db: Database, portfolio_id: int, symbol: str) -> Position | None:
    async with db.unit_of_work(read_only=True) as uow:
        return await uow.portfolios.get_position(portfolio_id, symbol)


# -- killed backends --------------------------------------------------------------------------


async def test_backend_killed_between_statements_of_a_run_block_commits_once(real_db, tally: Tally):
    db = real_db
    attempts = 0
    name = unique("killed-between")

    async def block(uow: UnitOfWork) -> int:
        nonlocal attempts
        attempts += 1
        portfolio = await uow.portfolios.add(Portfolio(name=name))
        for symbol in ("A", "B"):
            await uow.portfolios.add_position(
                Position(portfolio_id=portfolio.id, symbol=symbol, quantity=1, entry_price=1)
            )
        if attempts == 1:
            await kill_backend(await backend_pid(uow))
            tally.fault("pg_terminate_backend")
        await uow.portfolios.add_position(
            Position(portfolio_id=portfolio.id, symbol="C", quantity=1, entry_price=1)
        )
        return portfolio.id

    pid = await db.run(block)
    assert attempts == 2
    assert await count_rows(db, Portfolio) == 1
    assert await count_rows(db, Position) == 3
    async with db.unit_of_work(read_only=True) as uow:
        assert [p.symbol for p in await uow.portfolios.list_positions(pid)] == ["A", "B", "C"]
    tally.rows_verified("portfolios", 1)
    tally.rows_verified("positions", 3)


async def test_backend_killed_inside_record_trade_is_rerun_and_commits_once(real_db, tally: Tally):
    db = real_db
    pid = (await create_portfolio(db, name="mid-trade")).id
    await record_trade(db, portfolio_id=pid, symbol="MSFT", side="buy", quantity=10, price=100)
    updates: list[str] = []

    def kill_on_position_update(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE POSITIONS"):
            updates.append(statement)
            if len(updates) == 1:  # the first attempt dies on its UPDATE
                pid_ = conn.connection.driver_connection.get_server_pid()
                run_async_in_listener(kill_backend(pid_))
                tally.fault("pg_terminate_backend")

    with listening(db.engine.sync_engine, "before_cursor_execute", kill_on_position_update):
        trade = await record_trade(
            db, portfolio_id=pid, symbol="MSFT", side="buy", quantity=5, price=110
        )
    assert len(updates) == 2  # the whole transaction ran again
    assert await count_rows(db, Trade, Trade.portfolio_id == pid) == 2
    pos = await held(db, pid, "MSFT")
    assert pos is not None and pos.quantity == 15
    assert pos.entry_price == weighted_entry_price(
        Decimal(10), Decimal(100), Decimal(5), Decimal(110)
    )
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.session.get(Trade, trade.id)) is not None
    tally.rows_verified("trades", 2)
    tally.rows_verified("positions", 1)


async def test_backend_killed_before_commit_reports_unknown_outcome_and_retry_is_idempotent(
    real_db, tally: Tally
):
    db = real_db
    pid = (await create_portfolio(db, name="at-commit")).id
    await record_trade(db, portfolio_id=pid, symbol="AMD", side="buy", quantity=4, price=50)
    fired: list[int] = []

    def kill_before_commit(conn: Any) -> None:
        if not fired:
            fired.append(conn.connection.driver_connection.get_server_pid())
            run_async_in_listener(kill_backend(fired[0]))
            tally.fault("pg_terminate_backend")

    order = {
        "portfolio_id": pid,
        "symbol": "AMD",
        "side": "buy",
        "quantity": 6,
        "price": 60,
        "external_id": "order-at-commit",
    }
    with (
        listening(db.engine.sync_engine, "commit", kill_before_commit),
        pytest.raises(TransientError) as info,
    ):
        await record_trade(db, **order)
    assert info.value.outcome_unknown  # COMMIT was due: the caller cannot know
    # It did not commit (the backend died before COMMIT reached it) ...
    assert await count_rows(db, Trade, Trade.external_id == "order-at-commit") == 0
    assert (await held(db, pid, "AMD")).quantity == 4  # type: ignore[union-attr]
    # ... and retrying with the same external id is safe, however often.
    first = await record_trade(db, **order)
    again = await record_trade(db, **order)
    assert first.id == again.id
    assert await count_rows(db, Trade, Trade.portfolio_id == pid) == 2
    assert (await held(db, pid, "AMD")).quantity == 10  # type: ignore[union-attr]
    tally.rows_verified("trades", 2)


async def test_every_idle_pooled_connection_killed_the_next_units_of_work_work(
    real_db, tally: Tally
):
    db = real_db
    size = db.settings.pool_size
    all_in = asyncio.Event()
    pids: list[int] = []

    async def occupy() -> None:
        async with db.unit_of_work() as uow:
            pids.append(await backend_pid(uow))
            if len(pids) == size:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), 10)

    await asyncio.gather(*(occupy() for _ in range(size)))
    assert len(set(pids)) == size and pool_checked_out(db) == 0
    for pid in pids:  # every connection idle in the pool is now dead
        await kill_backend(pid)
    tally.fault("pg_terminate_backend", size)
    await asyncio.sleep(0.05)

    async def write(n: int) -> int:
        async with db.unit_of_work() as uow:
            await uow.portfolios.add(Portfolio(name=f"after-kill-{n}"))
            new_pid = await backend_pid(uow)
            await uow.commit()
            return new_pid

    new_pids = await asyncio.gather(*(write(n) for n in range(2 * size)))
    assert not set(new_pids) & set(pids)
    assert await count_rows(db, Portfolio) == 2 * size
    tally.rows_verified("portfolios", 2 * size)


# -- PostgreSQL refusing connections ----------------------------------------------------------


async def test_postgres_refusing_connections_then_back_recovers_without_restart(
    settings: Settings, truncate_after: None, tally: Tally
):
    real = make_url(settings.database_url)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    port = await proxy.start()
    url_password = remember_secret(unique("url-pw-pg"), "url_password")
    proxied = real.set(port=port, password=url_password).render_as_string(hide_password=False)
    db = Database(
        settings.model_copy(
            update={"database_url": proxied, "connect_timeout": 1.0, "pool_timeout": 1.0}
        )
    )
    errors: list[BaseException] = []

    async def add(name: str) -> None:
        async with db.unit_of_work() as uow:
            await uow.portfolios.add(Portfolio(name=name))
            await uow.commit()

    try:
        await db.connect()
        await add("before")
        await proxy.stop()  # the server "goes away": connections cut, new ones refused
        tally.fault("postgres refusing connections")

        with pytest.raises(TransientError) as info:
            await add("during-uow")
        errors.append(info.value)

        async def during(uow: UnitOfWork) -> None:
            await uow.portfolios.add(Portfolio(name="during-run"))

        with pytest.raises(TransientError) as info:
            await db.run(during, attempts=2)
        errors.append(info.value)
        with pytest.raises(DatabaseUnavailableError) as unavailable:
            await db.connect()
        errors.append(unavailable.value)
        assert f"127.0.0.1:{port}" in str(unavailable.value)
        health = await db.health()
        assert health.status == "down" and not health.ok
        errors.append(Exception(repr(health)))

        await proxy.start()  # back, on the same address: the same Database recovers
        await add("after")
        assert (await db.health()).status == "ok"
        async with db.unit_of_work(read_only=True) as uow:
            names = sorted((await uow.session.execute(select(Portfolio.name))).scalars())
        assert names == ["after", "before"]  # nothing of the failed attempts
        tally.rows_verified("portfolios", 4)
    finally:
        await db.close()
        await proxy.stop()
    for error in errors:
        assert not leaks(f"{error!s} {error!r}"), error
    assert url_password not in repr(db) and url_password not in repr(db.settings)

    # A Database pointed at a port nobody listens on, then a new one at the real server.
    nowhere = Database(
        settings.model_copy(
            update={
                "database_url": real.set(port=1, password=url_password).render_as_string(
                    hide_password=False
                ),
                "connect_timeout": 0.3,
            }
        )
    )
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            await nowhere.connect()
        assert url_password not in str(info.value)
        with pytest.raises(TransientError):
            await add_with(nowhere, "nowhere")
        tally.fault("postgres refusing connections")
    finally:
        await nowhere.close()
    async with Database(settings) as fresh:
        await add_with(fresh, "fresh")
        assert await count_rows(fresh, Portfolio, Portfolio.name == "nowhere") == 0
        assert await count_rows(fresh, Portfolio, Portfolio.name == "fresh") == 1


async def add_with(db: Database, name: str) -> None:
    async with db.unit_of_work() as uow:
        await uow.portfolios.add(Portfolio(name=name))
        await uow.commit()


# -- Redis unreachable, stalled, lying --------------------------------------------------------


async def cached_quantity(db: Database, portfolio_id: int, symbol: str) -> tuple[Decimal, int]:
    """(quantity of ``symbol`` from the cached read, statements it sent to PostgreSQL)."""
    with count_statements(db.engine) as counter:
        portfolio = await get_cached_portfolio(db, portfolio_id)
    assert portfolio is not None
    quantities = {p.symbol: p.quantity for p in portfolio.positions}
    return quantities[symbol], counter.count


async def warm(db: Database, portfolio_id: int, symbol: str) -> Decimal:
    """Fill the cache entry and check the next read is served by Redis alone."""
    await get_cached_portfolio(db, portfolio_id)
    await db.cache.drain()
    quantity, statements = await cached_quantity(db, portfolio_id, symbol)
    assert statements == 0, "expected a cache hit"
    return quantity


async def test_redis_unreachable_reads_fall_back_writes_commit_caching_resumes(
    settings: Settings, truncate_after: None, tally: Tally
):
    proxy, proxied = await proxied_redis(REDIS_URL)
    db = Database(settings.model_copy(update={"redis_url": proxied, "redis_socket_timeout": 0.25}))
    try:
        pid = (await create_portfolio(db, name="redis-outage")).id
        await record_trade(db, portfolio_id=pid, symbol="T", side="buy", quantity=1, price=10)
        assert await warm(db, pid, "T") == 1

        await proxy.stop()
        tally.fault("redis unreachable")
        assert (await cached_quantity(db, pid, "T"))[0] == 1  # from PostgreSQL
        await record_trade(db, portfolio_id=pid, symbol="T", side="buy", quantity=2, price=10)
        health = await db.health()
        assert health.status == "degraded" and health.ok
        assert not health.cache.ok and health.database.ok
        quantity, statements = await cached_quantity(db, pid, "T")
        assert (quantity, statements > 0) == (3, True)  # fresh, never the stale entry

        await proxy.start()
        assert (await db.health()).status == "ok"  # the pending invalidation is delivered
        assert (await cached_quantity(db, pid, "T"))[0] == 3
        await db.cache.drain()
        assert await cached_quantity(db, pid, "T") == (3, 0)  # caching resumed
        assert await count_rows(db, Trade) == 2
        tally.rows_verified("trades", 2)
    finally:
        await db.close()
        await proxy.stop()

    # Never reachable at all (and the password in the URL never shows).
    password = remember_secret(unique("url-pw-redis"), "url_password")
    async with Database(
        settings.model_copy(update={"redis_url": f"redis://:{password}@127.0.0.1:1/0"})
    ) as gone:
        pid = (await create_portfolio(gone, name="no-redis")).id
        await record_trade(gone, portfolio_id=pid, symbol="T", side="buy", quantity=5, price=1)
        assert (await cached_quantity(gone, pid, "T"))[0] == 5
        assert (await cached_quantity(gone, pid, "T"))[0] == 5
        health = await gone.health()
        assert health.status == "degraded"
        assert not leaks(repr(health)) and not leaks(repr(gone)) and not leaks(repr(gone.settings))
        tally.fault("redis unreachable")


async def test_stalled_redis_is_skipped_within_the_socket_timeout_and_nothing_is_stale(
    settings: Settings, truncate_after: None, tally: Tally
):
    async with private_redis() as url:
        await _stalled(settings.model_copy(update={"redis_url": url}), url, tally)


async def _stalled(settings: Settings, url: str, tally: Tally) -> None:
    db = Database(settings.model_copy(update={"redis_socket_timeout": 0.25}))
    admin = redis_asyncio.Redis.from_url(url)
    try:
        pid = (await create_portfolio(db, name="stall")).id
        await record_trade(db, portfolio_id=pid, symbol="S", side="buy", quantity=1, price=10)
        assert await warm(db, pid, "S") == 1

        await admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        tally.fault("redis CLIENT PAUSE")
        try:
            started = time.monotonic()
            assert (await cached_quantity(db, pid, "S"))[0] == 1
            await record_trade(db, portfolio_id=pid, symbol="S", side="buy", quantity=2, price=10)
            assert (await cached_quantity(db, pid, "S"))[0] == 3
            health = await db.health()
            elapsed = time.monotonic() - started
            assert health.status == "degraded" and not health.cache.ok
            assert elapsed < 1.8, f"a stalled Redis held requests for {elapsed:.2f}s"
        finally:
            # UNPAUSE itself waits for the pause on this Redis version; bounded either way.
            await asyncio.wait_for(admin.execute_command("CLIENT", "UNPAUSE"), 5)

        assert (await db.health()).status == "ok"
        assert (await cached_quantity(db, pid, "S"))[0] == 3
        await db.cache.drain()
        assert await cached_quantity(db, pid, "S") == (3, 0)
        assert await count_rows(db, Trade) == 2
        tally.rows_verified("trades", 2)
    finally:
        await admin.aclose()
        await db.close()


async def _entry_key(db: Database, client: redis_asyncio.Redis, pattern: str) -> bytes:
    keys = [k async for k in client.scan_iter(match=f"{db.settings.cache_prefix}:{pattern}")]
    assert len(keys) == 1, keys
    return keys[0]


def _garbage(entry: bytes) -> dict[str, bytes]:
    """Wrong values for a cache entry: some behind the right tag tokens, so they reach the codec."""
    head, _, body = entry.partition(b'",')
    head += b'",'
    fmt, fingerprint = body.split(b",")[0], body.split(b",")[1]
    return {
        "binary": b"\x00\xff\xfe garbage \x80",
        "bracket": b"[" + bytes(range(256)),
        "truncated": entry[: len(entry) // 2],
        "not json": head + b"this is not json",
        "wrong format": head + b"99," + fingerprint + b",null]",
        "wrong layout": head + fmt + b',"000000000000",null]',
        "wrong arity": head + fmt + b"," + fingerprint + b",[[1]]]",
        "wrong types": head + fmt + b"," + fingerprint + b',[["1","x",null,1,2,3],[]]]',
        "json string": b'"just a string"',
        "huge": b"[" * 1_000_000,
    }


async def test_garbage_under_a_cache_key_is_a_miss_and_gets_replaced(real_db, tally: Tally):
    db = real_db
    pid = (await create_portfolio(db, name="garbage")).id
    await record_trade(db, portfolio_id=pid, symbol="G", side="buy", quantity=7, price=3)
    assert await warm(db, pid, "G") == 7
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        key = await _entry_key(db, client, "portfolios:get_with_positions:*")
        good = await client.get(key)
        assert good is not None
        corrupt_before = db.cache.stats().corrupt
        for kind, garbage in _garbage(good).items():
            await client.set(key, garbage, keepttl=True)
            tally.fault("garbage cache value")
            quantity, statements = await cached_quantity(db, pid, "G")
            assert (quantity, statements > 0) == (7, True), kind  # read from PostgreSQL
            await db.cache.drain()
            assert await cached_quantity(db, pid, "G") == (7, 0), kind  # replaced, hit again
            tally.case("garbage cache value")
        # The six behind valid tag tokens reached the codec and were refused by it.
        assert db.cache.stats().corrupt - corrupt_before == 6

        # A tag token that is garbage (printable) only makes the entry a miss.
        tag = await _entry_key(db, client, "tag:portfolios:id:*")
        await client.set(tag, b"zz,yy,xx")
        tally.fault("garbage cache value")
        assert (await cached_quantity(db, pid, "G"))[0] == 7
        # Writes still invalidate: the next trade is visible through the cache.
        await record_trade(db, portfolio_id=pid, symbol="G", side="sell", quantity=2, price=3)
        assert (await cached_quantity(db, pid, "G"))[0] == 5
        tally.rows_verified("positions", 1)
    finally:
        await client.aclose()


async def test_non_utf8_bytes_under_a_tag_key_are_a_miss(real_db, tally: Tally):
    db = real_db
    pid = (await create_portfolio(db, name="garbage-tag")).id
    assert await get_cached_portfolio(db, pid) is not None
    await db.cache.drain()
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        tag = await _entry_key(db, client, "tag:portfolios:id:*")
        await client.set(tag, b"\xff\xfe\x80")
        tally.fault("garbage cache value")
        portfolio = await get_cached_portfolio(db, pid)  # must fall back to PostgreSQL
        assert portfolio is not None and portfolio.name == "garbage-tag"
    finally:
        await client.aclose()


# -- statement_timeout ------------------------------------------------------------------------


async def test_statement_timeout_is_transient_and_the_connection_comes_back_clean(
    settings: Settings, truncate_after: None, tally: Tally
):
    db = Database(
        settings.model_copy(update={"statement_timeout": 0.2, "pool_size": 1, "max_overflow": 0})
    )
    try:
        async with db.unit_of_work() as uow:
            pid = await backend_pid(uow)
        started = time.monotonic()
        with pytest.raises(TransientError) as info:
            async with db.unit_of_work() as uow:
                await uow.portfolios.add(Portfolio(name="half-written"))
                await uow.session.execute(text("SELECT pg_sleep(1)"))
                await uow.commit()
        tally.fault("statement_timeout")
        assert time.monotonic() - started < 0.9
        assert info.value.sqlstate == "57014"  # query_canceled: TransientError by design
        assert pool_checked_out(db) == 0
        async with db.unit_of_work() as uow:  # the same connection, reusable and clean
            assert await backend_pid(uow) == pid
            assert (
                await uow.session.execute(text("SHOW statement_timeout"))
            ).scalar_one() == "200ms"
            await uow.portfolios.add(Portfolio(name="next"))
            await uow.commit()
        async with admin_connection(db.settings.database_url) as conn:
            state = await conn.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
        assert state == "idle"
        assert pool_checked_out(db) == 0
        async with db.unit_of_work(read_only=True) as uow:
            names = list((await uow.session.execute(select(Portfolio.name))).scalars())
        assert names == ["next"]  # nothing of the cancelled transaction
        tally.rows_verified("portfolios", 2)
    finally:
        await db.close()


async def test_run_does_not_rerun_a_block_cancelled_by_statement_timeout(
    settings: Settings, truncate_after: None, tally: Tally
):
    db = Database(settings.model_copy(update={"statement_timeout": 0.2}))
    attempts = 0

    async def slow(uow: UnitOfWork) -> None:
        nonlocal attempts
        attempts += 1
        await uow.session.execute(text("SELECT pg_sleep(1)"))

    try:
        with pytest.raises(TransientError):
            await db.run(slow)
        tally.fault("statement_timeout", attempts)
        assert attempts == 1
    finally:
        await db.close()
