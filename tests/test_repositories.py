"""Repositories: generic CRUD, filters, keyset pagination, aggregate finders, locking."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import text

from alpha_data.errors import ConflictError, InvalidDataError, NotFoundError
from alpha_data.models import Severity, User
from alpha_data.repositories import Page
from alpha_data.testing.factories import (
    AlertFactory,
    ApiKeyFactory,
    PortfolioFactory,
    PositionFactory,
    TradeFactory,
    UserFactory,
)
from tests.support import count_statements


async def _users(db, n: int) -> list[User]:
    async with db.unit_of_work() as uow:
        users = await uow.users.add_many(UserFactory.build_batch(n))
        await uow.commit()
    return users


# -- generic base ---------------------------------------------------------------


async def test_get_get_one_and_missing(db):
    [user] = await _users(db, 1)
    async with db.unit_of_work() as uow:
        assert (await uow.users.get(user.id)).username == user.username
        assert await uow.users.get(10**15) is None
        with pytest.raises(NotFoundError, match="User 999999999 not found"):
            await uow.users.get_one(999_999_999)


@pytest.mark.parametrize("bad", ["1", 1.5, True, None, -1, 0, 2**63])
async def test_get_rejects_bad_ids(db, bad):
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError):
            await uow.users.get(bad)


async def test_add_many_is_batched(db):
    async with db.unit_of_work() as uow:
        await uow.session.execute(text("SELECT 1"))  # connection + BEGIN out of the way
        with count_statements(db.engine) as counter:
            users = await uow.users.add_many(UserFactory.build_batch(50))
        await uow.commit()
    assert all(u.id is not None and u.created_at is not None for u in users)
    inserts = [s for s in counter.statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1


async def test_add_many_rejects_foreign_objects_before_sql(db):
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError):
            await uow.users.add_many([UserFactory.build(), PortfolioFactory.build()])
        assert await uow.users.count() == 0


async def test_count_exists_and_filters(db):
    await _users(db, 3)
    async with db.unit_of_work() as uow:
        assert await uow.users.count() == 3
        assert await uow.users.count(role="trader") == 3
        assert await uow.users.count(role="admin") == 0
        assert await uow.users.exists(username="user_missing") is False
        assert await uow.users.count(last_login=None) == 3


@pytest.mark.parametrize(
    "filters",
    [
        {"nope": 1},
        {"password_hash": "x"},  # secret columns cannot be probed
        {"api_keys": 1},  # relationships are not filters
        {"username; DROP TABLE users": "x"},
    ],
)
async def test_unknown_filters_rejected_before_sql(db, filters):
    async with db.unit_of_work() as uow:
        with count_statements(db.engine) as counter:
            with pytest.raises(InvalidDataError, match="unknown field"):
                await uow.users.list(**filters)
            with pytest.raises(InvalidDataError):
                await uow.users.count(**filters)
    assert counter.count == 0


async def test_hostile_filter_values_are_just_values(db):
    await _users(db, 2)
    async with db.unit_of_work() as uow:
        page = await uow.users.list(username="x' OR '1'='1")
        assert page.items == []
        with pytest.raises(InvalidDataError):
            await uow.users.list(id="1; DROP TABLE users")
    async with db.unit_of_work() as uow:
        assert await uow.users.count() == 2


@pytest.mark.parametrize("order_by", ["password_hash", "email; --", "nope", "-nope", 5])
async def test_disallowed_order_by(db, order_by):
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError):
            await uow.users.list(order_by=order_by)


@pytest.mark.parametrize("limit", [0, -1, 1001, "10", True])
async def test_bad_limit(db, limit):
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError):
            await uow.users.list(limit=limit)


async def test_delete_by_object_and_id(db):
    a, b = await _users(db, 2)
    async with db.unit_of_work() as uow:
        await uow.users.delete(a.id)
        await uow.users.delete(await uow.users.get_one(b.id))
        with pytest.raises(NotFoundError):
            await uow.users.delete(a.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.users.count() == 0


# -- keyset pagination ------------------------------------------------------------


async def _page_all(db, **kw) -> list[int]:
    seen: list[int] = []
    after = None
    while True:
        async with db.unit_of_work(read_only=True) as uow:
            page = await uow.users.list(limit=7, after=after, **kw)
        assert isinstance(page, Page)
        seen.extend(u.id for u in page.items)
        if page.next_cursor is None:
            return seen
        after = page.next_cursor


@pytest.mark.parametrize("order_by", ["id", "-id", "username", "-username", "created_at"])
async def test_paging_returns_each_row_once(db, order_by):
    users = await _users(db, 30)
    seen = await _page_all(db, order_by=order_by)
    assert sorted(seen) == sorted(u.id for u in users)
    assert len(seen) == len(set(seen))


async def test_paging_while_rows_are_inserted(real_db):
    original = await _users(real_db, 40)
    seen: list[int] = []
    after = None
    while True:
        async with real_db.unit_of_work() as uow:
            page = await uow.users.list(limit=6, after=after)
            await uow.users.add(UserFactory.build())  # a concurrent writer
            await uow.commit()
        seen.extend(u.id for u in page.items)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert len(seen) == len(set(seen))
    assert {u.id for u in original} <= set(seen)


async def test_cursor_is_url_safe_and_tamper_evident(db):
    await _users(db, 5)
    async with db.unit_of_work() as uow:
        page = await uow.users.list(limit=2, order_by="username")
        cursor = page.next_cursor
        assert cursor and all(c.isalnum() or c in "-_" for c in cursor)
        for bad in [
            cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1],
            "garbage",
            "",
            "' OR 1=1 --",
            "a" * 5000,
        ]:
            with pytest.raises(InvalidDataError, match="cursor"):
                await uow.users.list(limit=2, after=bad, order_by="username")
        with pytest.raises(InvalidDataError, match="order_by"):
            await uow.users.list(limit=2, after=cursor, order_by="id")


# -- users and api keys ------------------------------------------------------------


async def test_user_finders(db):
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build(username="Ana", email="Ana@Example.COM"))
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert (await uow.users.get_by_username("Ana")).id == user.id
        assert await uow.users.get_by_username("ana") is None  # usernames are exact
        assert (await uow.users.get_by_email("ana@example.com")).id == user.id
        when = await uow.users.record_login(user.id)
        await uow.commit()
    assert when.tzinfo is not None
    async with db.unit_of_work() as uow:
        assert (await uow.users.get_one(user.id)).last_login == when
        with pytest.raises(NotFoundError):
            await uow.users.record_login(10**12)


async def test_api_key_methods(db):
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build())
        k1 = await uow.api_keys.add(ApiKeyFactory.build(user_id=user.id, prefix="pfx1"))
        k2 = await uow.api_keys.add(ApiKeyFactory.build(user_id=user.id, prefix="pfx2"))
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert (await uow.api_keys.get_by_prefix("pfx1")).id == k1.id
        assert await uow.api_keys.get_by_prefix("nope") is None
        revoked = await uow.api_keys.revoke(k1.id)
        first = revoked.revoked_at
        assert first is not None
        again = await uow.api_keys.revoke(k1.id)
        assert again.revoked_at == first  # idempotent
        await uow.api_keys.touch_last_used(k2.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert [k.id for k in await uow.api_keys.list_for_user(user.id)] == [k2.id]
        both = await uow.api_keys.list_for_user(user.id, include_revoked=True)
        assert [k.id for k in both] == [k1.id, k2.id]
        assert (await uow.api_keys.get_one(k2.id)).last_used is not None
        with pytest.raises(NotFoundError):
            await uow.api_keys.revoke(10**12)


# -- portfolios ----------------------------------------------------------------------


async def _portfolio_with_positions(db, n: int):
    async with db.unit_of_work() as uow:
        p = await uow.portfolios.add(PortfolioFactory.build())
        for i in range(n):
            await uow.portfolios.add_position(
                PositionFactory.build(portfolio_id=p.id, symbol=f"S{i:03d}")
            )
        await uow.commit()
    return p


async def test_get_with_positions_is_one_statement_when_read_only(db):
    p = await _portfolio_with_positions(db, 20)
    async with db.unit_of_work(read_only=True) as uow:
        await uow.session.execute(text("SELECT 1"))
        with count_statements(db.engine) as counter:
            loaded = await uow.portfolios.get_with_positions(p.id)
    assert counter.count == 1
    assert loaded is not None and len(loaded.positions) == 20
    assert [x.symbol for x in loaded.positions] == sorted(x.symbol for x in loaded.positions)
    async with db.unit_of_work() as uow:
        assert await uow.portfolios.get_with_positions(10**12) is None


async def test_get_with_positions_of_a_portfolio_without_positions(db):
    p = await _portfolio_with_positions(db, 0)
    async with db.unit_of_work(read_only=True) as uow:
        loaded = await uow.portfolios.get_with_positions(p.id, cached=False)
        assert await uow.portfolios.get_with_positions(10**12, cached=False) is None
    assert loaded is not None and loaded.name == p.name and loaded.positions == []


async def test_get_position_and_for_update(db):
    p = await _portfolio_with_positions(db, 2)
    async with db.unit_of_work() as uow:
        pos = await uow.portfolios.get_position(p.id, "S001", for_update=True)
        assert pos is not None and pos.quantity == Decimal("10")
        assert await uow.portfolios.get_position(p.id, "ZZZ") is None
        with pytest.raises(InvalidDataError):
            await uow.portfolios.get_position(p.id, "")


async def test_position_lock_blocks_second_writer(real_db):
    p = await _portfolio_with_positions(real_db, 1)
    order: list[str] = []
    locked = asyncio.Event()

    async def first() -> None:
        async with real_db.unit_of_work() as uow:
            await uow.portfolios.get_position(p.id, "S000", for_update=True)
            locked.set()
            await asyncio.sleep(0.2)
            order.append("first-commit")
            await uow.commit()

    async def second() -> None:
        await locked.wait()
        async with real_db.unit_of_work() as uow:
            await uow.portfolios.get_position(p.id, "S000", for_update=True)
            order.append("second-locked")

    await asyncio.gather(first(), second())
    assert order == ["first-commit", "second-locked"]


async def test_trades_keyset_by_executed_at(db):
    p = await _portfolio_with_positions(db, 0)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    async with db.unit_of_work() as uow:
        await uow.portfolios.add_trades(
            [
                TradeFactory.build(portfolio_id=p.id, executed_at=base + timedelta(minutes=i % 5))
                for i in range(23)
            ]
        )
        await uow.commit()
    seen, after = [], None
    async with db.unit_of_work() as uow:
        while True:
            page = await uow.portfolios.list_trades(p.id, limit=5, after=after)
            seen.extend(page.items)
            if not page.next_cursor:
                break
            after = page.next_cursor
        recent = await uow.portfolios.list_trades(
            p.id, since=base + timedelta(minutes=4), limit=100
        )
    assert len(seen) == 23 and len({t.id for t in seen}) == 23
    keys = [(t.executed_at, t.id) for t in seen]
    assert keys == sorted(keys, reverse=True)
    assert len(recent.items) == 4
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError):
            await uow.portfolios.list_trades(p.id, since=datetime(2026, 1, 1))


async def test_trade_by_external_id(db):
    p = await _portfolio_with_positions(db, 0)
    async with db.unit_of_work() as uow:
        t = await uow.portfolios.add_trade(TradeFactory.build(portfolio_id=p.id, external_id="E1"))
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert (await uow.portfolios.get_trade_by_external_id("E1")).id == t.id
        assert await uow.portfolios.get_trade_by_external_id("E2") is None


async def test_upsert_prices_is_one_statement(db):
    p = await _portfolio_with_positions(db, 3)
    async with db.unit_of_work() as uow:
        before = await uow.portfolios.get_with_positions(p.id)
        versions = {x.symbol: x.version for x in before.positions}
        with count_statements(db.engine) as counter:
            changed = await uow.portfolios.upsert_prices(
                p.id, {"S000": Decimal("101.5"), "S002": Decimal("7"), "NOTHELD": Decimal("1")}
            )
        await uow.commit()
    assert changed == 2 and counter.count == 1
    async with db.unit_of_work() as uow:
        after = {x.symbol: x for x in await uow.portfolios.list_positions(p.id)}
    assert after["S000"].current_price == Decimal("101.5")
    assert after["S001"].current_price is None
    assert after["S002"].version == versions["S002"] + 1


@pytest.mark.parametrize(
    "prices",
    [
        {"S000": Decimal("NaN")},
        {"S000": Decimal("-1")},
        {"S000": 1.5},
        {"S000": Decimal("0.000000001")},
        {"": Decimal("1")},
        ["S000"],
    ],
)
async def test_upsert_prices_rejects_bad_input(db, prices):
    p = await _portfolio_with_positions(db, 1)
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError):
            await uow.portfolios.upsert_prices(p.id, prices)


async def test_optimistic_lock_conflict_on_stale_position(real_db):
    p = await _portfolio_with_positions(real_db, 1)
    async with real_db.unit_of_work() as uow:
        stale = await uow.portfolios.get_position(p.id, "S000")
    async with real_db.unit_of_work() as uow:
        fresh = await uow.portfolios.get_position(p.id, "S000")
        fresh.quantity = Decimal("11")
        await uow.commit()
    with pytest.raises(ConflictError, match="changed"):
        async with real_db.unit_of_work() as uow:
            mine = await uow.session.merge(stale, load=False)
            mine.quantity = Decimal("99")
            await uow.commit()
    async with real_db.unit_of_work() as uow:
        assert (await uow.portfolios.get_position(p.id, "S000")).quantity == Decimal("11")


async def test_two_stale_alert_updates_one_wins(real_db):
    async with real_db.unit_of_work() as uow:
        alert = await uow.alerts.add(AlertFactory.build())
        await uow.commit()
    results: list[str] = []
    both_loaded = asyncio.Event()
    loaded = 0

    async def edit(title: str) -> None:
        nonlocal loaded
        try:
            async with real_db.unit_of_work() as uow:
                a = await uow.alerts.get_one(alert.id)
                loaded += 1
                if loaded == 2:
                    both_loaded.set()
                await asyncio.wait_for(both_loaded.wait(), 5)
                a.title = title
                await uow.commit()
            results.append("ok")
        except ConflictError:
            results.append("conflict")

    await asyncio.gather(edit("one"), edit("two"))
    assert sorted(results) == ["conflict", "ok"]


# -- alerts ---------------------------------------------------------------------


async def test_list_open_filters_and_acknowledge(db):
    async with db.unit_of_work() as uow:
        a1 = await uow.alerts.add(
            AlertFactory.build(severity=Severity.CRITICAL, tags=["risk", "fx"])
        )
        a2 = await uow.alerts.add(AlertFactory.build(severity=Severity.INFO, source="ops", tags=[]))
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert [a.id for a in await uow.alerts.list_open()] == [a2.id, a1.id]
        assert [a.id for a in await uow.alerts.list_open(severity="critical")] == [a1.id]
        assert [a.id for a in await uow.alerts.list_open(source="ops")] == [a2.id]
        assert [a.id for a in await uow.alerts.list_open(tag="fx")] == [a1.id]
        assert await uow.alerts.list_open(tag="'; DROP TABLE alerts; --") == []
        with pytest.raises(InvalidDataError):
            await uow.alerts.list_open(severity="apocalyptic")
        acked = await uow.alerts.acknowledge(a1.id, "ana")
        await uow.commit()
    first_at = acked.acknowledged_at
    assert acked.acknowledged and acked.acknowledged_by == "ana" and first_at is not None
    async with db.unit_of_work() as uow:
        again = await uow.alerts.acknowledge(a1.id, "bob")
        await uow.commit()
    assert again.acknowledged_by == "ana" and again.acknowledged_at == first_at
    async with db.unit_of_work() as uow:
        assert [a.id for a in await uow.alerts.list_open()] == [a2.id]
        with pytest.raises(NotFoundError):
            await uow.alerts.acknowledge(10**12, "ana")
        with pytest.raises(InvalidDataError):
            await uow.alerts.acknowledge(a2.id, "")


async def test_add_many_objects_are_persistent_and_clean(db):
    async with db.unit_of_work() as uow:
        p = await uow.portfolios.add(PortfolioFactory.build())
        trades = await uow.portfolios.add_trades(
            [TradeFactory.build(portfolio_id=p.id, external_id=f"bulk-{i}") for i in range(5)]
        )
        assert all(t.id and t.created_at and t.executed_at for t in trades)
        assert trades[0].status.value == "filled" and trades[0].fees == Decimal("0")
        assert not uow.session.dirty and not uow.session.new
        with count_statements(db.engine) as counter:
            await uow.flush()
        assert counter.count == 0  # nothing left to write
        assert await uow.session.get(type(trades[0]), trades[0].id) is trades[0]
        trades[1].fees = Decimal("1.25")
        await uow.commit()
    async with db.unit_of_work() as uow:
        page = await uow.portfolios.list_trades(p.id, limit=10)
        fees = {t.external_id: t.fees for t in page.items}
    assert fees["bulk-1"] == Decimal("1.25") and fees["bulk-0"] == Decimal("0")


async def test_add_many_with_mixed_columns_falls_back_and_still_works(db):
    async with db.unit_of_work() as uow:
        p = await uow.portfolios.add(PortfolioFactory.build())
        given = TradeFactory.build(
            portfolio_id=p.id, executed_at=datetime(2026, 1, 1, tzinfo=timezone.utc)
        )
        plain = TradeFactory.build(portfolio_id=p.id)
        del plain.__dict__["fees"]  # a different set of columns than `given`
        trades = await uow.portfolios.add_trades([given, plain])
        await uow.commit()
    assert trades[0].executed_at.year == 2026 and trades[1].fees == Decimal("0")


async def test_add_many_conflict_writes_nothing(db):
    async with db.unit_of_work() as uow:
        p = await uow.portfolios.add(PortfolioFactory.build())
        await uow.commit()
    with pytest.raises(ConflictError):
        async with db.unit_of_work() as uow:
            await uow.portfolios.add_trades(
                [TradeFactory.build(portfolio_id=p.id, external_id="same") for _ in range(3)]
            )
    async with db.unit_of_work() as uow:
        assert await uow.portfolios.count_trades(p.id) == 0


async def test_fast_paths_work_as_the_first_thing_a_process_does(real_db):
    """The read-only fast path must not rely on some earlier ORM query configuring mappers."""
    import subprocess
    import sys
    import textwrap

    p = await _portfolio_with_positions(real_db, 2)
    script = textwrap.dedent(
        f"""
        import asyncio
        from alpha_data import Database, Settings
        async def main():
            async with Database(Settings(database_url={real_db.settings.database_url!r},
                                         cache_enabled=False, _env_file=None)) as db:
                async with db.unit_of_work(read_only=True) as uow:
                    loaded = await uow.portfolios.get_with_positions({p.id})
                    assert [x.symbol for x in loaded.positions] == ["S000", "S001"]
                    assert await uow.users.get(10**12) is None
        asyncio.run(main())
        """
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
