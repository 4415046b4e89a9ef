"""A read-only unit of work is read-only on the primary too, raw SQL included (issue 21 item 3).

On a replica the standby refuses writes; on the primary the read-only unit of
work runs as a READ ONLY transaction, so the same typed error arrives on both
routes (tests/scaleout/test_replica_bounds.py checks the replica route).
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from alpha_data import Database, UnitOfWork
from alpha_data.errors import ReadOnlyError

INSERT = text(
    "INSERT INTO users (username, email, password_hash, role) "
    "VALUES ('raw', 'raw@x.io', 'x', 'viewer')"
)


async def count_raw(db: Database) -> int:
    async with db.unit_of_work() as uow:
        found = await uow.session.execute(text("SELECT count(*) FROM users WHERE username = 'raw'"))
        return int(found.scalar_one())


@pytest.mark.parametrize("isolation_level", [None, "READ COMMITTED", "REPEATABLE READ"])
async def test_raw_insert_in_a_read_only_unit_of_work_is_refused(
    real_db: Database, isolation_level: str | None
) -> None:
    with pytest.raises(ReadOnlyError) as info:
        async with real_db.unit_of_work(read_only=True, isolation_level=isolation_level) as uow:  # type: ignore[arg-type]
            await uow.session.execute(INSERT)
    assert info.value.sqlstate == "25006"
    assert await count_raw(real_db) == 0


async def test_raw_write_functions_are_refused_too(real_db: Database) -> None:
    """Not only INSERT: nextval() writes, and the READ ONLY transaction refuses it."""
    with pytest.raises(ReadOnlyError):
        async with real_db.unit_of_work(read_only=True) as uow:
            await uow.session.execute(text("SELECT nextval('users_id_seq')"))


async def test_read_only_units_of_work_still_read(real_db: Database) -> None:
    async with real_db.unit_of_work() as uow:
        await uow.session.execute(INSERT)
        await uow.commit()
    async with real_db.unit_of_work(read_only=True) as uow:
        first = await uow.users.get_by_username("raw")
        again = await uow.session.execute(text("SELECT count(*) FROM users"))
        assert again.scalar_one() == 1
    assert first is not None and first.email == "raw@x.io"
    assert real_db.engine.pool.checkedout() == 0


# -- the read-only pool on the primary (issue 19: no BEGIN/ROLLBACK round trips) ----------


async def in_transaction(uow: UnitOfWork) -> bool:
    """Whether the unit of work's connection holds a transaction open on the server."""
    connection = await uow.session.connection()
    raw = await connection.get_raw_connection()
    return bool(raw.driver_connection.is_in_transaction())  # type: ignore[union-attr]


async def test_read_only_unit_of_work_holds_no_transaction_open(real_db: Database) -> None:
    """No BEGIN / ROLLBACK round trips: each read is a transaction of its own (autocommit)."""
    async with real_db.unit_of_work(read_only=True) as uow:
        await uow.users.get(1, cached=False)
        assert not await in_transaction(uow)
        shown = await uow.session.execute(text("SHOW transaction_read_only"))
        assert shown.scalar_one() == "on"
    async with real_db.unit_of_work() as uow:  # a writable one is one transaction
        await uow.users.get(1)
        assert await in_transaction(uow)


async def test_read_only_pool_is_reported_and_its_statements_reach_engine_listeners(
    real_db: Database,
) -> None:
    from tests.support import count_statements

    assert real_db.read_engine is None  # built on first use
    with count_statements(real_db.engine) as counter:
        async with real_db.unit_of_work(read_only=True) as uow:
            await uow.users.get(1, cached=False)
            assert real_db.stats().pool.read_checked_out == 1
            assert real_db.stats().pool.checked_out == 0
    assert counter.count == 1  # listeners on db.engine (OpenTelemetry, tests) see it
    assert real_db.read_engine is not None
    stats = real_db.stats().pool
    assert stats.read_checked_out == 0 and stats.read_checked_in == 1
    assert real_db.pool_status()["read_checkedin"] == 1


async def test_pgbouncer_mode_keeps_read_only_transactions(real_db: Database) -> None:
    """Startup parameters do not pass PgBouncer: no read-only pool, READ ONLY transactions."""
    settings = real_db.settings.model_copy(update={"pgbouncer_mode": True})
    async with Database(settings) as db:
        with pytest.raises(ReadOnlyError):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.session.execute(INSERT)
        async with db.unit_of_work(read_only=True) as uow:
            await uow.session.execute(text("SELECT 1"))
            assert await in_transaction(uow)
        assert db.read_engine is None
    assert await count_raw(real_db) == 0


async def test_routed_reads_on_the_primary_use_the_read_only_pool(real_db: Database) -> None:
    """With replicas configured, reads the router keeps on the primary (start fence pending,
    no usable replica) also run in autocommit on the read-only pool, writes refused."""
    # The "replica" is the primary itself: never in recovery, so never usable.
    settings = real_db.settings.model_copy(update={"replica_urls": [real_db.settings.database_url]})
    async with Database(settings) as db:
        assert db.router is not None
        with pytest.raises(ReadOnlyError):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.session.execute(INSERT)
        async with db.unit_of_work(read_only=True) as uow:
            await uow.users.get(1, cached=False)
            assert not await in_transaction(uow)
        assert db.read_engine is not None and db.stats().pool.read_checked_in >= 1
        route = db.router.primary_route({"isolation_level": "REPEATABLE READ"})
        assert route.engine is not db.read_engine  # a snapshot needs its transaction
    assert await count_raw(real_db) == 0
