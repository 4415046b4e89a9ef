"""A read-only unit of work is read-only on the primary too, raw SQL included (issue 21 item 3).

On a replica the standby refuses writes; on the primary the read-only unit of
work runs as a READ ONLY transaction, so the same typed error arrives on both
routes (tests/scaleout/test_replica_bounds.py checks the replica route).
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from alpha_data import Database
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
