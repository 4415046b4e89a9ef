"""Cached repository reads against real PostgreSQL and Redis (and the memory:// backend).

Hits, secrets, invalidation after commit (and never on rollback), the
no-stale-window protocol, single-flight, corrupt entries, fail-open with
Redis on a closed port and with a stalled Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
import redis.asyncio as redis_asyncio
from sqlalchemy import inspect, text, update
from sqlalchemy.exc import InvalidRequestError

from alpha_data import Database, Settings, UnitOfWork
from alpha_data.cache import SecretNotLoadedError, cached, invalidate
from alpha_data.cache.invalidation import ROUTE_KEY
from alpha_data.cache.keys import Personal, part
from alpha_data.errors import ConflictError, InvalidDataError
from alpha_data.models import Portfolio, Role, Severity, User
from alpha_data.repositories.pagination import Page
from alpha_data.repositories.portfolios import PortfolioRepository
from alpha_data.repositories.users import USER_ID, UserRepository
from alpha_data.testing import truncate_all
from alpha_data.testing.factories import (
    FAKE_HASH,
    AlertFactory,
    PortfolioFactory,
    PositionFactory,
    UserFactory,
)
from tests.reliability.tools import private_redis
from tests.support import REDIS_URL, count_statements, isolated

T = TypeVar("T")

# -- fixtures and helpers ------------------------------------------------------


@pytest.fixture(params=["redis", "memory"])
async def anydb(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Database]:
    """The ``db`` fixture, once with Redis and once with the memory:// backend."""
    if request.param == "memory":
        settings = settings.model_copy(update={"redis_url": "memory://"})
    async with isolated(settings) as database:
        yield database


@pytest.fixture(params=["redis", "memory"])
async def real_any(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Database]:
    """A Database on the real pool (concurrent sessions), with Redis or memory://."""
    if request.param == "memory":
        settings = settings.model_copy(update={"redis_url": "memory://"})
    database = Database(settings)
    try:
        yield database
    finally:
        await database.close()
        await truncate_all(settings.database_url)


class Reads:
    """What one unit of work did: its result and the SELECTs it sent."""

    def __init__(self, result: Any, statements: list[str]) -> None:
        self.result = result
        self.selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]


async def run(db: Database, fn: Callable[[UnitOfWork], Awaitable[Any]], **kw: Any) -> Reads:
    """Run ``fn(uow)`` in a fresh unit of work, count its SELECTs, let background stores finish."""
    with count_statements(db.engine) as counter:
        async with db.unit_of_work(**kw) as uow:
            result = await fn(uow)
    await db.cache.drain()
    return Reads(result, counter.statements)


async def add(db: Database, *objs: Any) -> list[Any]:
    """Insert and commit ``objs`` (users, portfolios, alerts...)."""
    async with db.unit_of_work() as uow:
        uow.session.add_all(objs)
        await uow.commit()
    return list(objs)


def columns(obj: Any) -> dict[str, Any]:
    """Loaded, non-secret column values."""
    state = inspect(obj)
    return {
        a.key: state.dict[a.key]
        for a in state.mapper.column_attrs
        if a.key not in type(obj).__secret_attributes__
    }


# -- hits ----------------------------------------------------------------------


async def test_hit_returns_equal_attached_object_without_sql(anydb: Database) -> None:
    (user,) = await add(anydb, UserFactory.build(username="ana"))
    first = await run(anydb, lambda uow: uow.users.get(user.id))
    assert len(first.selects) == 1

    async def read(uow: UnitOfWork) -> Any:
        got = await uow.users.get(user.id)
        assert got in uow.session and inspect(got).persistent
        assert await uow.users.get(user.id) is got  # the session's copy from now on
        assert await uow.users.get_by_username("ana") is got
        return got

    second = await run(anydb, read)
    hit = second.result
    (select,) = second.selects  # get_by_username missed once; get never queried
    assert "WHERE users.username" in select
    assert type(hit) is User and hit is not first.result
    assert columns(hit) == columns(first.result)
    assert hit.created_at.tzinfo is not None and hit.role is Role.TRADER
    assert anydb.cache.stats().hits >= 1


async def test_hit_objects_stay_usable_after_the_block(db: Database) -> None:
    (user,) = await add(db, UserFactory.build())
    await run(db, lambda uow: uow.users.get(user.id))
    hit = (await run(db, lambda uow: uow.users.get(user.id))).result
    assert hit.email == user.email and inspect(hit).detached


async def test_hit_can_be_modified_and_flushed(anydb: Database) -> None:
    (user,) = await add(anydb, UserFactory.build())
    await run(anydb, lambda uow: uow.users.get(user.id))

    async def change(uow: UnitOfWork) -> None:
        hit = await uow.users.get(user.id)
        hit.email = "changed@example.com"
        await uow.commit()

    assert (await run(anydb, change)).selects == []  # the hit itself needed no SELECT
    after = await run(anydb, lambda uow: uow.users.get(user.id, cached=False))
    assert after.result.email == "changed@example.com"
    assert (await run(anydb, lambda uow: uow.users.get(user.id))).result.email == (
        "changed@example.com"
    )


async def test_portfolio_with_positions_hit(anydb: Database) -> None:
    (portfolio,) = await add(anydb, PortfolioFactory.build())
    async with anydb.unit_of_work() as uow:
        for symbol, qty in (("MSFT", "1.23456789"), ("AAPL", "9999999999.99999999")):
            await uow.portfolios.add_position(
                PositionFactory.build(portfolio_id=portfolio.id, symbol=symbol, quantity=qty)
            )
        await uow.commit()
    miss = await run(anydb, lambda uow: uow.portfolios.get_with_positions(portfolio.id))
    assert len(miss.selects) == 2

    async def read(uow: UnitOfWork) -> Portfolio:
        got = await uow.portfolios.get_with_positions(portfolio.id)
        assert got is not None
        assert [p.symbol for p in got.positions] == ["AAPL", "MSFT"]
        assert got.positions[0].portfolio is got  # from the identity map, no SQL
        with pytest.raises(InvalidRequestError):
            _ = got.trades  # not promised: raise_on_sql, as after the real query
        return got

    hit = await run(anydb, read)
    assert hit.selects == []
    assert columns(hit.result) == columns(miss.result)
    quantities = [p.quantity for p in hit.result.positions]
    assert quantities == [Decimal("9999999999.99999999"), Decimal("1.23456789")]
    assert [columns(p) for p in hit.result.positions] == [columns(p) for p in miss.result.positions]


async def test_hit_positions_can_be_changed_and_removed(db: Database) -> None:
    (portfolio,) = await add(db, PortfolioFactory.build())
    async with db.unit_of_work() as uow:
        for symbol in ("A", "B"):
            await uow.portfolios.add_position(
                PositionFactory.build(portfolio_id=portfolio.id, symbol=symbol)
            )
        await uow.commit()
    await run(db, lambda uow: uow.portfolios.get_with_positions(portfolio.id))

    async def change(uow: UnitOfWork) -> None:
        got = await uow.portfolios.get_with_positions(portfolio.id)
        got.positions[0].quantity = Decimal("3")
        await uow.portfolios.delete_position(got.positions[1])
        await uow.commit()

    assert (await run(db, change)).selects == []
    fresh = (await run(db, lambda uow: uow.portfolios.get_with_positions(portfolio.id))).result
    assert [(p.symbol, p.quantity, p.version) for p in fresh.positions] == [("A", Decimal("3"), 2)]


# -- secrets -------------------------------------------------------------------


async def test_secrets_are_never_cached_and_hidden_on_cached_reads(db: Database) -> None:
    (user,) = await add(db, UserFactory.build(username="sec"))
    for fn in (
        lambda uow: uow.users.get(user.id),
        lambda uow: uow.users.get_by_username("sec"),
        lambda uow: uow.users.get_by_email(user.email),
    ):
        for _ in ("miss", "hit"):
            got = (await run(db, fn)).result
            with pytest.raises(SecretNotLoadedError, match="cached=False"):
                _ = got.password_hash
            assert got.username == "sec"
    for key in await db.redis.keys(f"{db.cache.prefix}:*"):
        raw = await db.redis.get(key)
        assert FAKE_HASH.encode() not in raw and b"argon2" not in raw

    plain = await run(db, lambda uow: uow.users.get_by_username("sec", cached=False))
    assert plain.result.password_hash == FAKE_HASH

    async def refresh(uow: UnitOfWork) -> str:
        got = await uow.users.get(user.id)
        await uow.session.refresh(got, ["password_hash"])
        return str(got.password_hash)

    assert (await run(db, refresh)).result == FAKE_HASH


async def test_cached_reads_keep_secrets_the_caller_already_loaded(db: Database) -> None:
    (user,) = await add(db, UserFactory.build(username="auth"))
    await run(db, lambda uow: uow.users.get_by_username("auth"))

    async def read(uow: UnitOfWork) -> None:
        plain = await uow.users.get_by_username("auth", cached=False)
        assert plain.password_hash == FAKE_HASH
        assert await uow.users.get_by_username("auth") is plain  # hit: the session's copy
        assert await uow.users.get_by_email(user.email) is plain  # miss: refreshed
        assert plain.password_hash == FAKE_HASH

    await run(db, read)


async def test_password_can_be_changed_on_a_cached_user(db: Database) -> None:
    (user,) = await add(db, UserFactory.build())
    await run(db, lambda uow: uow.users.get(user.id))

    async def change(uow: UnitOfWork) -> None:
        got = await uow.users.get(user.id)
        got.password_hash = "$argon2id$new"
        await uow.commit()

    await run(db, change)
    assert (
        await run(db, lambda uow: uow.users.get(user.id, cached=False))
    ).result.password_hash == "$argon2id$new"


# -- stale entries and optimistic locking --------------------------------------


async def test_modifying_a_stale_cached_portfolio_raises_conflict(db: Database) -> None:
    (portfolio,) = await add(db, PortfolioFactory.build(name="old"))
    async with db.unit_of_work() as uow:
        await uow.portfolios.add_position(
            PositionFactory.build(portfolio_id=portfolio.id, symbol="X")
        )
        await uow.commit()
    await run(db, lambda uow: uow.portfolios.get_with_positions(portfolio.id))
    # A write the data layer cannot see (raw SQL) leaves the cache stale.
    async with db.unit_of_work() as uow:
        await uow.session.execute(
            text("UPDATE portfolios SET name = 'newer', version = version + 1 WHERE id = :id"),
            {"id": portfolio.id},
        )
        await uow.session.execute(
            text("UPDATE positions SET quantity = 99, version = version + 1"),
        )
        await uow.commit()

    async def overwrite_portfolio(uow: UnitOfWork) -> None:
        stale = await uow.portfolios.get_with_positions(portfolio.id)
        assert stale.name == "old" and stale.version == 1  # served from the stale entry
        stale.name = "lost update"
        await uow.commit()

    with pytest.raises(ConflictError):
        await run(db, overwrite_portfolio)

    async def overwrite_position(uow: UnitOfWork) -> None:
        stale = await uow.portfolios.get_with_positions(portfolio.id)
        stale.positions[0].quantity = Decimal("1")
        await uow.commit()

    with pytest.raises(ConflictError):
        await run(db, overwrite_position)
    fresh = (await run(db, lambda uow: uow.portfolios.get(portfolio.id, cached=False))).result
    assert fresh.name == "newer"


async def test_raw_sql_writes_are_invisible_until_invalidated_explicitly(db: Database) -> None:
    (user,) = await add(db, UserFactory.build())
    await run(db, lambda uow: uow.users.get(user.id))

    async def raw_update(uow: UnitOfWork) -> None:
        await uow.session.execute(
            text("UPDATE users SET role = 'admin' WHERE id = :id"), {"id": user.id}
        )
        invalidate(uow.session, User, id=user.id, username=user.username, email=user.email)
        await uow.commit()

    await run(db, raw_update)
    assert (await run(db, lambda uow: uow.users.get(user.id))).result.role is Role.ADMIN


# -- negative caching ----------------------------------------------------------


async def test_missing_rows_are_cached_for_the_negative_ttl(db: Database) -> None:
    for _ in ("miss", "hit"):
        assert (await run(db, lambda uow: uow.users.get(987654))).result is None
    assert (await run(db, lambda uow: uow.users.get(987654))).selects == []
    ttl_ms = await db.redis.pttl(f"{db.cache.prefix}:users:get:987654")
    assert 0 < ttl_ms <= db.settings.cache_negative_ttl * 1000
    await run(db, lambda uow: uow.users.get_by_username("nobody"))
    assert (await run(db, lambda uow: uow.users.get_by_username("nobody"))).selects == []


async def test_positive_entries_use_cache_ttl(db: Database) -> None:
    (user,) = await add(db, UserFactory.build())
    await run(db, lambda uow: uow.users.get(user.id))
    ttl_ms = await db.redis.pttl(f"{db.cache.prefix}:users:get:{user.id}")
    assert db.settings.cache_negative_ttl * 1000 < ttl_ms <= db.settings.cache_ttl * 1000


async def test_inserting_a_row_ends_its_negative_entry(anydb: Database) -> None:
    for _ in ("miss", "hit"):
        assert (await run(anydb, lambda uow: uow.users.get_by_username("zoe"))).result is None
        assert (await run(anydb, lambda uow: uow.users.get_by_email("ZOE@x.io"))).result is None
    await add(anydb, UserFactory.build(username="zoe", email="zoe@x.io"))
    assert (await run(anydb, lambda uow: uow.users.get_by_username("zoe"))).result is not None
    assert (await run(anydb, lambda uow: uow.users.get_by_email("Zoe@X.io"))).result is not None


# -- invalidation --------------------------------------------------------------


async def test_renaming_invalidates_old_and_new_lookups(anydb: Database) -> None:
    (user,) = await add(anydb, UserFactory.build(username="before", email="b@x.io"))
    for name in ("before", "after"):
        await run(anydb, lambda uow, name=name: uow.users.get_by_username(name))
    await run(anydb, lambda uow: uow.users.get_by_email("B@x.io"))

    async def rename(uow: UnitOfWork) -> None:
        got = await uow.users.get(user.id)
        got.username = "after"
        got.email = "a@x.io"
        await uow.commit()

    await run(anydb, rename)
    assert (await run(anydb, lambda uow: uow.users.get_by_username("before"))).result is None
    assert (await run(anydb, lambda uow: uow.users.get_by_username("after"))).result.id == user.id
    assert (await run(anydb, lambda uow: uow.users.get_by_email("b@x.io"))).result is None
    assert (await run(anydb, lambda uow: uow.users.get_by_email("A@x.io"))).result.id == user.id


async def test_invalidation_deletes_entity_keys_and_bumps_tags(db: Database) -> None:
    (user,) = await add(db, UserFactory.build(username="keyed"))
    await run(db, lambda uow: uow.users.get(user.id))
    await run(db, lambda uow: uow.users.get_by_username("keyed"))
    prefix = db.cache.prefix
    keys = {k.decode() for k in await db.redis.keys(f"{prefix}:*")}
    by_name = f"{prefix}:users:get_by_username:{part(Personal('keyed'))}"  # personal: digest
    assert {f"{prefix}:users:get:{user.id}", by_name} <= keys
    tag = f"{prefix}:tag:users:id:{user.id}"
    token = await db.redis.get(tag)
    before = db.cache.stats().invalidations

    async def touch(uow: UnitOfWork) -> None:
        (await uow.users.get(user.id)).is_active = False
        await uow.commit()

    await run(db, touch)
    assert not await db.redis.exists(f"{prefix}:users:get:{user.id}")
    assert not await db.redis.exists(by_name)
    assert await db.redis.get(tag) not in (None, token)
    assert db.cache.stats().invalidations >= before + 3  # id, username, email


async def test_rollback_invalidates_nothing(anydb: Database) -> None:
    (user,) = await add(anydb, UserFactory.build(email="keep@x.io"))
    await run(anydb, lambda uow: uow.users.get(user.id))
    before = anydb.cache.stats().invalidations

    async def change_then_roll_back(uow: UnitOfWork) -> None:
        got = await uow.users.get(user.id)
        got.email = "gone@x.io"
        await uow.flush()  # the UPDATE ran, but the block ends without commit

    await run(anydb, change_then_roll_back)

    async def change_then_rollback(uow: UnitOfWork) -> None:
        got = await uow.users.get(user.id)
        got.email = "gone2@x.io"
        await uow.flush()
        await uow.rollback()
        await uow.commit()  # nothing left to commit, nothing to invalidate

    await run(anydb, change_then_rollback)
    assert anydb.cache.stats().invalidations == before
    again = await run(anydb, lambda uow: uow.users.get(user.id))
    assert again.selects == [] and again.result.email == "keep@x.io"


async def test_failed_commit_invalidates_nothing(db: Database) -> None:
    (user, _) = await add(db, UserFactory.build(), UserFactory.build(username="taken"))
    await run(db, lambda uow: uow.users.get(user.id))
    before = db.cache.stats().invalidations

    async def clash(uow: UnitOfWork) -> None:
        got = await uow.users.get(user.id)
        got.username = "taken"
        await uow.commit()

    with pytest.raises(ConflictError):
        await run(db, clash)
    assert db.cache.stats().invalidations == before
    assert (await run(db, lambda uow: uow.users.get(user.id))).selects == []


async def test_invalidation_happens_before_after_commit_callbacks(db: Database) -> None:
    (user,) = await add(db, UserFactory.build(email="one@x.io"))
    await run(db, lambda uow: uow.users.get(user.id))
    seen: list[str] = []

    async def change(uow: UnitOfWork) -> None:
        async def callback() -> None:
            async with db.unit_of_work() as other:
                seen.append((await other.users.get(user.id)).email)

        (await uow.users.get(user.id)).email = "two@x.io"
        uow.on_commit(callback)
        await uow.commit()

    await run(db, change)
    assert seen == ["two@x.io"]


async def test_adding_and_acknowledging_alerts_refreshes_open_lists(anydb: Database) -> None:
    await add(anydb, AlertFactory.build(title="first", severity=Severity.ERROR))
    for _ in range(2):
        got = await run(anydb, lambda uow: uow.alerts.list_open())
        assert [a.title for a in got.result] == ["first"]
    assert got.selects == []
    by_severity = await run(anydb, lambda uow: uow.alerts.list_open(severity="error"))
    assert [a.title for a in by_severity.result] == ["first"]
    assert (await run(anydb, lambda uow: uow.alerts.list_open(Severity.ERROR))).selects == []

    await add(anydb, AlertFactory.build(title="second", severity=Severity.ERROR))
    got = await run(anydb, lambda uow: uow.alerts.list_open())
    assert [a.title for a in got.result] == ["second", "first"]
    got = await run(anydb, lambda uow: uow.alerts.list_open(severity=Severity.ERROR))
    assert [a.title for a in got.result] == ["second", "first"]

    async def acknowledge(uow: UnitOfWork) -> None:
        await uow.alerts.acknowledge(got.result[0].id, by="ops")
        await uow.commit()

    await run(anydb, acknowledge)
    assert [a.title for a in (await run(anydb, lambda uow: uow.alerts.list_open())).result] == [
        "first"
    ]


async def test_upsert_prices_invalidates_the_portfolio(anydb: Database) -> None:
    (portfolio,) = await add(anydb, PortfolioFactory.build())
    async with anydb.unit_of_work() as uow:
        await uow.portfolios.add_position(
            PositionFactory.build(portfolio_id=portfolio.id, symbol="NVDA")
        )
        await uow.commit()
    await run(anydb, lambda uow: uow.portfolios.get_with_positions(portfolio.id))

    async def prices(uow: UnitOfWork) -> None:
        await uow.portfolios.upsert_prices(portfolio.id, {"NVDA": Decimal("123.45678901")})
        await uow.commit()

    await run(anydb, prices)
    got = (await run(anydb, lambda uow: uow.portfolios.get_with_positions(portfolio.id))).result
    assert got.positions[0].current_price == Decimal("123.45678901")
    assert got.positions[0].version == 2


async def test_record_login_invalidates_every_lookup_of_the_user(anydb: Database) -> None:
    (user,) = await add(anydb, UserFactory.build(username="log", email="log@x.io"))
    lookups = (
        lambda uow: uow.users.get(user.id),
        lambda uow: uow.users.get_by_username("log"),
        lambda uow: uow.users.get_by_email("log@x.io"),
    )
    for fn in lookups:
        assert (await run(anydb, fn)).result.last_login is None

    async def login(uow: UnitOfWork) -> Any:
        when = await uow.users.record_login(user.id)
        await uow.commit()
        return when

    when = (await run(anydb, login)).result
    for fn in lookups:
        assert (await run(anydb, fn)).result.last_login == when


async def test_untagged_core_writes_invalidate_the_whole_table(anydb: Database) -> None:
    (user,) = await add(anydb, UserFactory.build(username="core"))
    await run(anydb, lambda uow: uow.users.get_by_username("core"))

    async def core_update(uow: UnitOfWork) -> None:
        await uow.session.execute(update(User).where(User.id == user.id).values(role="admin"))
        await uow.commit()

    await run(anydb, core_update)
    got = await run(anydb, lambda uow: uow.users.get_by_username("core"))
    assert got.result.role is Role.ADMIN and len(got.selects) == 1


# -- read-your-writes and the session ------------------------------------------


async def test_a_unit_of_work_reads_its_own_writes(anydb: Database) -> None:
    (user,) = await add(anydb, UserFactory.build(username="mine"))
    await run(anydb, lambda uow: uow.users.get_by_username("fresh"))  # cached None
    await run(anydb, lambda uow: uow.alerts.list_open())  # cached []

    async def write_then_read(uow: UnitOfWork) -> None:
        await uow.users.add(UserFactory.build(username="fresh"))
        assert (await uow.users.get_by_username("fresh")) is not None
        got = await uow.users.get(user.id)
        got.email = "pending@x.io"  # not flushed yet
        assert (await uow.users.get_by_email("pending@x.io")) is got
        uow.session.add(AlertFactory.build(title="pending"))
        assert [a.title for a in await uow.alerts.list_open()] == ["pending"]

    await run(anydb, write_then_read)  # rolled back: nothing invalidated, nothing stale
    assert (await run(anydb, lambda uow: uow.users.get_by_username("fresh"))).result is None
    assert (await run(anydb, lambda uow: uow.alerts.list_open())).result == []


async def test_the_sessions_copy_wins_over_the_cache(db: Database) -> None:
    (user,) = await add(db, UserFactory.build(username="copy"))
    await run(db, lambda uow: uow.users.get_by_username("copy"))

    async def read(uow: UnitOfWork) -> None:
        (listed,) = (await uow.users.list(username="copy")).items
        assert await uow.users.get_by_username("copy") is listed
        assert await uow.users.get(user.id) is listed

    await run(db, read)


async def test_unkeyable_arguments_bypass_the_cache(db: Database) -> None:
    before = db.cache.stats().bypassed
    for bad in (1.5, True):
        with pytest.raises(InvalidDataError):
            await run(db, lambda uow, bad=bad: uow.users.get(bad))
    with pytest.raises(InvalidDataError):  # not text PostgreSQL accepts: the driver says so
        await run(db, lambda uow: uow.users.get_by_username("\ud800"))
    assert db.cache.stats().bypassed == before + 3
    assert await db.redis.keys(f"{db.cache.prefix}:users:get:*") == []


async def test_cached_false_reads_postgresql(db: Database) -> None:
    (user,) = await add(db, UserFactory.build())
    await run(db, lambda uow: uow.users.get(user.id))
    stats = db.cache.stats()
    again = await run(db, lambda uow: uow.users.get(user.id, cached=False))
    assert len(again.selects) == 1 and db.cache.stats().hits == stats.hits


async def test_read_only_units_of_work_use_the_cache(db: Database) -> None:
    (user,) = await add(db, UserFactory.build())
    await run(db, lambda uow: uow.users.get(user.id), read_only=True)
    assert (await run(db, lambda uow: uow.users.get(user.id), read_only=True)).selects == []


async def test_serializable_units_of_work_read_postgresql_but_invalidate(db: Database) -> None:
    (user,) = await add(db, UserFactory.build())
    await run(db, lambda uow: uow.users.get(user.id))

    async def change(uow: UnitOfWork) -> None:
        got = await uow.users.get(user.id)
        got.email = "ser@x.io"
        await uow.commit()

    changed = await run(db, change, isolation_level="SERIALIZABLE")
    assert len(changed.selects) == 1
    assert (await run(db, lambda uow: uow.users.get(user.id))).result.email == "ser@x.io"


# -- keys, corrupt values, background stores -----------------------------------


async def test_keys_are_readable_and_under_the_prefix(db: Database) -> None:
    (user,) = await add(db, UserFactory.build(username="o'neil:x"))
    await run(db, lambda uow: uow.users.get_by_username("o'neil:x"))
    await run(db, lambda uow: uow.alerts.list_open(source="risk"))
    await run(db, lambda uow: uow.users.get_by_email("O'Neil@Example.com"))
    keys = sorted(k.decode() for k in await db.redis.keys(f"{db.cache.prefix}:*"))
    prefix = db.cache.prefix
    # Usernames and emails identify people: keyed digests, never readable.
    name_part, email_part = part(Personal("o'neil:x")), part(Personal("o'neil@example.com"))
    assert f"{prefix}:users:get_by_username:{name_part}" in keys
    assert f"{prefix}:alerts:list_open:~:risk:~" in keys
    assert f"{prefix}:users:get_by_email:{email_part}" in keys
    assert not any("neil" in k for k in keys)
    assert all(k.startswith(f"{prefix}:") for k in keys)
    assert user.id > 0


async def test_corrupt_or_foreign_values_are_misses_and_get_overwritten(db: Database) -> None:
    (user,) = await add(db, UserFactory.build())
    key = f"{db.cache.prefix}:users:get:{user.id}"
    await run(db, lambda uow: uow.users.get(user.id))
    good = await db.redis.get(key)
    head = good[: good.index(b'",') + 2]
    for bad in (b"\x80garbage", head + b"2,null]", head + b'1,"ffffffffffff",null]', head + b"["):
        await db.redis.set(key, bad)
        got = await run(db, lambda uow: uow.users.get(user.id))
        assert got.result.id == user.id and len(got.selects) == 1
        assert await db.redis.get(key) == good  # overwritten with a valid entry
    assert db.cache.stats().corrupt == 3


async def test_the_store_runs_in_the_background(db: Database) -> None:
    (user,) = await add(db, UserFactory.build())
    async with db.unit_of_work() as uow:
        await uow.users.get(user.id)
        assert db.cache.background == 1  # the caller did not wait for the store
    await db.cache.drain()
    assert db.cache.background == 0 and db.cache.stats().stores == 1


@asynccontextmanager
async def on_private_redis(settings: Settings) -> AsyncIterator[tuple[Database, str]]:
    """An isolated Database on a redis-server of the test's own, and that server's URL.

    Tests that pause Redis use it: pausing the shared server would stall every other
    test run using it at the same time (``make test`` runs parts of the matrix at once).
    """
    async with private_redis() as url, isolated(with_redis(settings, url)) as db:
        yield db, url


def with_redis(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"redis_url": url})


async def test_a_miss_does_not_wait_for_its_store(settings: Settings) -> None:
    async with on_private_redis(settings) as (db, url):  # paused below
        await _miss_with_writes_paused(db, url)


async def _miss_with_writes_paused(db: Database, url: str) -> None:
    (user,) = await add(db, UserFactory.build())
    admin = redis_asyncio.Redis.from_url(url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", 2000, "WRITE")  # reads still pass
        try:
            started = time.monotonic()
            async with db.unit_of_work() as uow:
                got = await uow.users.get(user.id)
            elapsed = time.monotonic() - started
            assert got.id == user.id and db.cache.background == 1  # the store is stuck...
            assert elapsed < db.settings.redis_socket_timeout / 2  # ...the caller was not
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
        await db.cache.drain()
    finally:
        await admin.aclose()
    assert db.cache.stats().stores == 1
    assert (await run(db, lambda uow: uow.users.get(user.id))).selects == []


async def test_disabled_cache_goes_straight_to_postgresql(settings: Settings) -> None:
    async with isolated(settings.model_copy(update={"cache_enabled": False})) as database:
        (user,) = await add(database, UserFactory.build())
        for _ in range(2):
            got = await run(database, lambda uow: uow.users.get(user.id))
            assert len(got.selects) == 1 and got.result.password_hash == FAKE_HASH
        assert database.cache.stats() == type(database.cache.stats())(0, 0, 0, 0)
        assert await database.redis.keys(f"{database.cache.prefix}:*") == []
        assert (await database.health()).status == "ok"


# -- concurrency: no stale window, single flight -------------------------------


class GatedUsers(UserRepository):
    """users.get with a pause between its query and its return (a slow reader)."""

    queried: asyncio.Event
    gate: asyncio.Event

    @cached(USER_ID)
    async def get_slowly(self, id: int) -> User | None:
        user = await UserRepository.get(self, id, cached=False)
        self.queried.set()
        await self.gate.wait()
        return user


async def test_a_slow_read_never_leaves_a_stale_entry(real_any: Database) -> None:
    db = real_any
    (user,) = await add(db, UserFactory.build(email="old@x.io"))
    GatedUsers.queried, GatedUsers.gate = asyncio.Event(), asyncio.Event()

    async def slow_read() -> str:
        async with db.unit_of_work() as uow:
            got = await GatedUsers(uow.session).get_slowly(user.id)
            return got.email

    reader = asyncio.create_task(slow_read())
    await GatedUsers.queried.wait()  # the reader has the old row and will store it...
    async with db.unit_of_work() as uow:  # ...after this commit and its invalidation
        (await uow.users.get(user.id)).email = "new@x.io"
        await uow.commit()
    GatedUsers.gate.set()
    assert await reader == "old@x.io"
    await db.cache.drain()
    assert db.cache.stats().store_conflicts == 1  # the old value was refused

    async def read(uow: UnitOfWork) -> str:
        return (await GatedUsers(uow.session).get_slowly(user.id)).email

    assert (await run(db, read)).result == "new@x.io"
    assert (await run(db, read)).result == "new@x.io"  # and now it is cached


class ReplicaUsers(UserRepository):
    """users.get as if its session had been routed to a replica far ahead of any commit."""

    @cached(USER_ID)
    async def get_on_replica(self, id: int) -> User | None:
        self.session.info[ROUTE_KEY] = SimpleNamespace(replica="replica-1", replay_lsn=2**62)
        return await UserRepository.get(self, id, cached=False)


async def test_without_replicas_configured_replica_reads_are_not_stored(db: Database) -> None:
    """Its commits carry no WAL position, so nothing proves a replica replayed them
    (tests/test_cache_replica.py has the Database with replicas)."""
    (user,) = await add(db, UserFactory.build())
    for _ in range(2):
        got = await run(db, lambda uow: ReplicaUsers(uow.session).get_on_replica(user.id))
        assert got.result.id == user.id and len(got.selects) == 1  # a replica may lag
    assert db.cache.stats().stores == 0 and db.cache.stats().misses == 2


async def test_concurrent_misses_share_one_query(real_any: Database) -> None:
    db = real_any
    (user,) = await add(db, UserFactory.build(username="popular"))
    GatedUsers.queried, GatedUsers.gate = asyncio.Event(), asyncio.Event()
    sessions: list[Any] = []

    async def read() -> User:
        async with db.unit_of_work() as uow:
            got = await GatedUsers(uow.session).get_slowly(user.id)
            assert got in uow.session
            sessions.append(uow.session)
            return got

    with count_statements(db.engine) as counter:
        readers = [asyncio.create_task(read()) for _ in range(10)]
        # Every reader missed and waits in (or leads) the flight (bounded: a reader
        # whose cache read failed instead would otherwise keep this loop going).
        deadline = time.monotonic() + 10
        while db.cache.stats().misses < 10:
            if time.monotonic() > deadline:
                GatedUsers.gate.set()
                await asyncio.gather(*readers, return_exceptions=True)
                pytest.fail(f"only {db.cache.stats().misses} of 10 readers missed")
            await asyncio.sleep(0.005)
        GatedUsers.gate.set()
        results = await asyncio.gather(*readers)
    selects = [s for s in counter.statements if s.lstrip().startswith("SELECT")]
    assert len(selects) == 1
    assert db.cache.stats().coalesced == 9
    assert len({id(r) for r in results}) == 10 and len({id(s) for s in sessions}) == 10
    assert all(columns(r) == columns(results[0]) for r in results)


# -- fail-open -------------------------------------------------------------------


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "alpha_data.cache" and r.levelno == logging.WARNING
    ]


async def test_redis_on_a_closed_port_fails_open(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with isolated(down) as db:
        db.cache.breaker.cooldown = 0  # try Redis on every call: warnings must still be rare
        await db.connect()
        (user,) = await add(db, UserFactory.build(username="open"))
        for _ in range(3):
            got = await run(db, lambda uow: uow.users.get_by_username("open"))
            assert got.result.id == user.id and len(got.selects) == 1

        async def write(uow: UnitOfWork) -> None:
            (await uow.users.get(user.id)).email = "still@x.io"
            await uow.commit()

        await run(db, write)
        got = await run(db, lambda uow: uow.users.get(user.id))
        assert got.result.email == "still@x.io"
        assert len(cache_warnings(caplog)) == 1
        stats = db.cache.stats()
        assert stats.errors >= 5 and stats.hits == 0 and stats.pending_invalidations > 0
        health = await db.health()
        assert health.status == "degraded" and health.ok
        assert health.database.ok and not health.cache.ok
        assert "ConnectionError" in (health.cache.error or "")


async def test_a_redis_answering_with_errors_fails_open(settings: Settings) -> None:
    """A Redis user that may not read (NOPERM on MGET) and may not run scripts."""
    name = f"alpha_noread_{uuid.uuid4().hex[:8]}"
    admin = redis_asyncio.Redis.from_url(REDIS_URL)
    rules = ("on", "nopass", "~*", "&*", "+@all", "-mget", "-evalsha", "-eval")
    await admin.execute_command("ACL", "SETUSER", name, *rules)
    try:
        url = REDIS_URL.replace("redis://", f"redis://{name}@", 1)
        async with isolated(settings.model_copy(update={"redis_url": url})) as db:
            db.cache.breaker.cooldown = 0
            (user,) = await add(db, UserFactory.build())
            for _ in range(2):
                got = await run(db, lambda uow: uow.users.get(user.id))
                assert got.result.id == user.id and len(got.selects) == 1
            stats = db.cache.stats()
            assert stats.hits == 0 and stats.errors >= 2 and stats.bypassed == 2
            health = await db.health()
            assert health.status == "degraded" and "NoPermission" in (health.cache.error or "")
    finally:
        await admin.execute_command("ACL", "DELUSER", name)
        await admin.aclose()


@asynccontextmanager
async def paused_redis(url: str, ms: int) -> AsyncIterator[None]:
    """Stall the Redis server at ``url`` for ``ms`` (CLIENT PAUSE ALL); always unpause."""
    admin = redis_asyncio.Redis.from_url(url)
    await admin.ping()
    await admin.execute_command("CLIENT", "PAUSE", ms, "ALL")
    try:
        yield
    finally:
        try:
            await asyncio.wait_for(admin.execute_command("CLIENT", "UNPAUSE"), ms / 1000 + 2)
        finally:
            await admin.aclose()


async def test_a_stalled_redis_fails_open_and_catches_up(settings: Settings) -> None:
    # A redis-server of this test's own: pausing the shared one would stall every
    # other test run using it at the same time.
    async with (
        private_redis() as url,
        isolated(settings.model_copy(update={"redis_url": url})) as db,
    ):
        await _stall_and_catch_up(db, url)


async def _stall_and_catch_up(db: Database, url: str) -> None:
    (user,) = await add(db, UserFactory.build(email="before@x.io"))
    await run(db, lambda uow: uow.users.get(user.id))
    timeout = db.settings.redis_socket_timeout
    started = time.monotonic()
    async with paused_redis(url, 1500):
        t0 = time.monotonic()
        got = await run(db, lambda uow: uow.users.get(user.id))
        assert got.result.email == "before@x.io" and len(got.selects) == 1
        assert time.monotonic() - t0 < timeout + 0.4  # one socket timeout, no retries

        async def write(uow: UnitOfWork) -> None:
            (await uow.users.get(user.id)).email = "during@x.io"
            await uow.commit()

        t0 = time.monotonic()
        await run(db, write)  # the circuit is open: no second wait
        assert time.monotonic() - t0 < 0.3
        assert db.cache.stats().pending_invalidations >= 1
        assert db.cache.degraded
    await asyncio.sleep(max(0.0, 1.6 - (time.monotonic() - started)))
    await asyncio.sleep(db.cache.breaker.cooldown)
    # The stale entry is still in Redis, but this process delivers its pending
    # invalidations before it reads from the cache again.
    got = await run(db, lambda uow: uow.users.get(user.id))
    assert got.result.email == "during@x.io"
    assert db.cache.stats().pending_invalidations == 0
    assert (await db.health()).status == "ok"
    assert (await run(db, lambda uow: uow.users.get(user.id))).selects == []


async def test_health_reports_the_cache(db: Database) -> None:
    health = await db.health()
    assert health.status == "ok" and health.cache.ok
    assert health.cache.detail["backend"] == "RedisBackend"
    assert set(health.cache.detail["stats"]) >= {"hits", "misses", "errors", "invalidations"}


# -- paginated reads (issue 17 row 12) ---------------------------------------------------


class PagedPortfolios(PortfolioRepository):
    """An application's repository with a cached keyset-paginated read."""

    @cached("portfolios:pages")
    async def page(self, limit: int, after: str | None = None) -> Page[Portfolio]:
        return await self.list(limit=limit, after=after)


async def test_a_paginated_read_is_cached_with_its_cursor(db: Database) -> None:
    await add(db, *(PortfolioFactory.build(name=f"p{i}") for i in range(3)))

    def first(uow: UnitOfWork) -> Awaitable[Page[Portfolio]]:
        return PagedPortfolios(uow.session).page(2)

    miss = await run(db, first)
    hit = await run(db, first)
    assert len(miss.selects) >= 1 and hit.selects == []
    assert [p.name for p in hit.result.items] == [p.name for p in miss.result.items]
    assert hit.result.next_cursor == miss.result.next_cursor is not None
    rest = await run(db, lambda uow: PagedPortfolios(uow.session).page(2, miss.result.next_cursor))
    assert [p.name for p in rest.result.items] == ["p2"] and rest.result.next_cursor is None
    # The entry hangs on its tags (an app declares with invalidated_by what moves them).
    await db.cache.invalidate(["portfolios:pages"])
    assert len((await run(db, first)).selects) >= 1


def test_a_list_returning_read_needs_many_true() -> None:
    with pytest.raises(TypeError, match="many=True"):

        class Unmarked(PortfolioRepository):
            @cached("portfolios:all")
            async def everything(self) -> list[Portfolio]:
                return []
