"""Database: connect with retry, health, close, pool exhaustion, run() retries."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from alpha_data import Database, Settings
from alpha_data.errors import (
    ConflictError,
    DatabaseUnavailableError,
    InvalidDataError,
    TransientError,
)
from alpha_data.testing.factories import PortfolioFactory, UserFactory
from alpha_data.uow import UnitOfWork
from tests.support import terminate_backend


def _closed_port_settings(settings: Settings, **kw: object) -> Settings:
    return settings.model_copy(
        update={
            "database_url": "postgresql+asyncpg://postgres:pw-should-not-leak@127.0.0.1:1/nowhere",
            **kw,
        }
    )


async def test_connect_fails_fast_with_clear_error(settings):
    db = Database(_closed_port_settings(settings, connect_timeout=1.0))
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        await db.connect()
    elapsed = time.monotonic() - started
    await db.close()
    assert elapsed < 5
    message = str(info.value)
    assert "127.0.0.1:1" in message and "ALPHA_DATA_DATABASE_URL" in message
    assert "pw-should-not-leak" not in message and "pw-should-not-leak" not in repr(db)


async def test_connect_and_context_manager(settings):
    async with Database(settings) as db, db.unit_of_work(read_only=True) as uow:
        assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1
    assert db.engine.pool.checkedout() == 0


async def test_health_reports_database_cache_and_pool(real_db):
    health = await real_db.health()
    assert health.status == "ok" and health.ok
    assert health.database.ok and health.database.latency_ms is not None
    assert health.database.detail["server_version"].startswith("15")
    assert health.cache.ok
    assert {"size", "checkedout"} <= set(health.pool)


async def test_health_when_database_down(settings):
    db = Database(_closed_port_settings(settings, connect_timeout=0.5))
    health = await db.health()
    await db.close()
    assert health.status == "down" and not health.ok
    assert "127.0.0.1:1" in (health.database.error or "")
    assert "pw-should-not-leak" not in repr(health)


async def test_health_when_redis_down_is_degraded(settings):
    db = Database(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    health = await db.health()
    await db.close()
    assert health.status == "degraded" and health.ok and not health.cache.ok


async def test_session_is_bare_async_session(real_db):
    async with real_db.session() as session:
        assert (await session.execute(text("SELECT 2"))).scalar_one() == 2


async def test_pool_exhaustion_raises_transient(settings):
    db = Database(
        settings.model_copy(update={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.3})
    )
    holder = db.unit_of_work()
    async with holder as uow:
        await uow.session.execute(text("SELECT 1"))  # holds the only connection
        started = time.monotonic()
        with pytest.raises(TransientError, match="pool"):
            async with db.unit_of_work() as other:
                await other.session.execute(text("SELECT 1"))
        assert time.monotonic() - started < 3
    async with db.unit_of_work() as uow:  # the pool recovers
        assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1
    await db.close()


async def test_run_commits_and_returns(real_db):
    async def create(uow: UnitOfWork) -> int:
        return (await uow.users.add(UserFactory.build(username="runner"))).id

    user_id = await real_db.run(create)
    async with real_db.unit_of_work() as uow:
        assert (await uow.users.get_one(user_id)).username == "runner"


async def test_run_does_not_retry_conflicts(real_db):
    calls = 0

    async def create(uow: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        await uow.users.add(UserFactory.build(username="dup"))

    await real_db.run(create)
    with pytest.raises(ConflictError):
        await real_db.run(create)
    assert calls == 2


async def test_run_does_not_retry_programming_errors(real_db):
    calls = 0

    async def broken(uow: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        raise InvalidDataError("bad input")

    with pytest.raises(InvalidDataError):
        await real_db.run(broken)
    assert calls == 1


async def test_run_retries_serialization_failure_and_commits_once(real_db):
    async with real_db.unit_of_work() as uow:
        p = await uow.portfolios.add(PortfolioFactory.build(description="0"))
        await uow.commit()
    attempts: list[int] = []
    both_read = asyncio.Event()
    readers = 0

    async def increment(uow: UnitOfWork) -> None:
        nonlocal readers
        attempts.append(1)
        value = (
            await uow.session.execute(
                text("SELECT description FROM portfolios WHERE id = :id"), {"id": p.id}
            )
        ).scalar_one()
        readers += 1
        if readers >= 2:
            both_read.set()
        await asyncio.wait_for(both_read.wait(), 5)  # both transactions saw the old value
        await uow.session.execute(
            text("UPDATE portfolios SET description = :d WHERE id = :id"),
            {"d": str(int(value) + 1), "id": p.id},
        )

    await asyncio.gather(
        real_db.run(increment, isolation_level="SERIALIZABLE"),
        real_db.run(increment, isolation_level="SERIALIZABLE"),
    )
    assert len(attempts) == 3  # one of the two was re-run exactly once
    async with real_db.unit_of_work() as uow:
        final = (
            await uow.session.execute(
                text("SELECT description FROM portfolios WHERE id = :id"), {"id": p.id}
            )
        ).scalar_one()
    assert final == "2"  # no lost update


async def test_run_retries_after_backend_killed_before_commit(real_db):
    attempts = 0

    async def work(uow: UnitOfWork) -> int:
        nonlocal attempts
        attempts += 1
        user = await uow.users.add(UserFactory.build(username=f"killed{attempts}"))
        if attempts == 1:
            pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await terminate_backend(pid)
            await uow.session.execute(text("SELECT 1"))  # fails: connection gone
        return user.id

    user_id = await real_db.run(work)
    assert attempts == 2
    async with real_db.unit_of_work() as uow:
        assert await uow.users.get_by_username("killed1") is None  # nothing half-written
        assert (await uow.users.get_one(user_id)).username == "killed2"
        assert await uow.users.count() == 1


async def test_run_gives_up_with_transient_error_chained(real_db):
    async def always_fails(uow: UnitOfWork) -> None:
        await uow.session.execute(
            text("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$")
        )

    with pytest.raises(TransientError, match="gave up after 2 attempts") as info:
        await real_db.run(always_fails, attempts=2)
    assert isinstance(info.value.__cause__, TransientError)
    assert info.value.__cause__.sqlstate == "40001"


async def test_idle_connection_killed_in_pool_is_replaced(real_db):
    async with real_db.unit_of_work() as uow:
        pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    await terminate_backend(pid)
    await asyncio.sleep(0.05)
    async with real_db.unit_of_work() as uow:  # pre-ping replaces the dead connection
        assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1
