"""UnitOfWork: commit, rollback, after-commit hooks, state errors, read-only."""

from __future__ import annotations

import pytest

from alpha_data.errors import ConflictError, ReadOnlyError, UnitOfWorkStateError
from alpha_data.models import User
from alpha_data.testing.factories import UserFactory


async def test_commit_persists_and_objects_stay_loaded(db):
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build(username="ana"))
        await uow.commit()
    # usable after the block: no lazy load, no expiry
    assert user.username == "ana" and user.id > 0
    async with db.unit_of_work() as uow:
        assert (await uow.users.get_by_username("ana")) is not None


async def test_leaving_without_commit_rolls_back(db):
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build(username="bob"))
    assert user.username == "bob"  # still readable after the rollback
    async with db.unit_of_work() as uow:
        assert await uow.users.get_by_username("bob") is None


async def test_exception_rolls_back_and_propagates(db):
    with pytest.raises(RuntimeError, match="boom"):
        async with db.unit_of_work() as uow:
            await uow.users.add(UserFactory.build(username="carl"))
            raise RuntimeError("boom")
    async with db.unit_of_work() as uow:
        assert await uow.users.get_by_username("carl") is None


async def test_read_objects_not_expired_after_block(db):
    async with db.unit_of_work() as uow:
        uid = (await uow.users.add(UserFactory.build())).id
        await uow.commit()
    async with db.unit_of_work() as uow:
        user = await uow.users.get_one(uid)
    assert user.email.endswith("@example.com")


async def test_on_commit_runs_after_commit_in_order(db):
    calls: list[str] = []

    async def first() -> None:
        calls.append("first")

    async def second() -> None:
        calls.append("second")

    async with db.unit_of_work() as uow:
        await uow.users.add(UserFactory.build())
        uow.on_commit(first)
        uow.on_commit(second)
        assert calls == []
        await uow.commit()
    assert calls == ["first", "second"]


async def test_on_commit_not_run_on_rollback_or_failed_commit(db):
    calls: list[str] = []

    async def hook() -> None:
        calls.append("ran")

    async with db.unit_of_work() as uow:
        await uow.users.add(UserFactory.build(username="dora"))
        uow.on_commit(hook)
    assert calls == []

    async with db.unit_of_work() as uow:
        await uow.users.add(UserFactory.build(username="dora"))
        await uow.commit()
    with pytest.raises(ConflictError):
        async with db.unit_of_work() as uow:
            uow.on_commit(hook)
            uow.session.add(UserFactory.build(username="dora"))
            await uow.commit()
    assert calls == []


async def test_failing_callback_does_not_uncommit(db, caplog):
    async def broken() -> None:
        raise ValueError("callback bug")

    async with db.unit_of_work() as uow:
        await uow.users.add(UserFactory.build(username="eve"))
        uow.on_commit(broken)
        await uow.commit()
    assert "after-commit callback failed" in caplog.text
    async with db.unit_of_work() as uow:
        assert await uow.users.get_by_username("eve") is not None


async def test_use_after_end_and_double_enter_raise(db):
    uow = db.unit_of_work()
    async with uow:
        pass
    with pytest.raises(UnitOfWorkStateError):
        _ = uow.users
    with pytest.raises(UnitOfWorkStateError):
        await uow.commit()
    with pytest.raises(UnitOfWorkStateError):
        async with uow:
            pass
    with pytest.raises(UnitOfWorkStateError):
        _ = db.unit_of_work().session


async def test_read_only_refuses_writes(db):
    async with db.unit_of_work(read_only=True) as uow:
        with pytest.raises(ReadOnlyError):
            await uow.users.add(UserFactory.build())
    async with db.unit_of_work(read_only=True) as uow:
        from sqlalchemy import update

        with pytest.raises(ReadOnlyError):
            await uow.session.execute(update(User).values(role="admin"))


async def test_read_only_on_real_pool_refuses_writes(real_db):
    async with real_db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build())
        await uow.commit()
    async with real_db.unit_of_work(read_only=True) as uow:
        loaded = await uow.users.get_one(user.id)
        loaded.email = "changed@example.com"
        with pytest.raises(ReadOnlyError):
            await uow.flush()
    async with real_db.unit_of_work(read_only=True) as uow:
        assert (await uow.users.get_one(user.id)).email == user.email


async def test_isolation_level_is_applied(real_db):
    async with real_db.unit_of_work(isolation_level="SERIALIZABLE") as uow:
        from sqlalchemy import text

        level = (await uow.session.execute(text("SHOW transaction_isolation"))).scalar_one()
    assert level == "serializable"
    async with real_db.unit_of_work() as uow:
        level = (await uow.session.execute(text("SHOW transaction_isolation"))).scalar_one()
    assert level == "read committed"
