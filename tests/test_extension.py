"""Applications extend the unit of work: ``uow.repository``, their own UoW, stale repositories.

The app code under test is tests/typed_app/app.py, which ``mypy --strict``
also checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from alpha_data import Database, Settings, UnitOfWork
from alpha_data.errors import UnitOfWorkStateError
from alpha_data.models import User
from alpha_data.repositories import MetricsRepository, Page, UserRepository
from alpha_data.testing import isolated
from alpha_data.testing.factories import PortfolioFactory, UserFactory
from alpha_data.uow import ReadOnlySession
from tests.typed_app.app import (
    AppUoW,
    NamedUsers,
    build_app,
    count_in_run,
    library_only,
    library_service,
    make_database,
    read_with_context_managers,
)

# -- uow.repository ---------------------------------------------------------------


async def test_repository_is_one_instance_per_unit_of_work(db: Database) -> None:
    async with db.unit_of_work() as uow:
        named = uow.repository(NamedUsers)
        assert uow.repository(NamedUsers) is named
        assert uow.repository(UserRepository) is uow.users  # the library's go the same way
        assert named.session is uow.session and named.read_only is False
    async with db.unit_of_work(read_only=True) as other:
        again = other.repository(NamedUsers)
        assert again is not named and again.read_only is True
        assert isinstance(again.session.sync_session, ReadOnlySession)


async def test_app_repository_reads_and_writes_in_the_unit_of_work(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.users.add_many([UserFactory.build(username=n) for n in ("ann", "abe", "bo")])
        found = await uow.repository(NamedUsers).starting_with("a")
        assert [u.username for u in found] == ["ann", "abe"]
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.repository(NamedUsers).count() == 3


async def test_repository_outside_the_block_and_of_a_non_repository(db: Database) -> None:
    uow = db.unit_of_work()
    with pytest.raises(UnitOfWorkStateError):
        uow.repository(NamedUsers)  # before the block
    async with uow:
        with pytest.raises(TypeError, match="not a repository class"):
            uow.repository(dict)  # type: ignore[type-var]
    with pytest.raises(UnitOfWorkStateError):
        uow.repository(NamedUsers)  # after it


# -- issue 17 row 2: a repository kept past its block --------------------------------


@pytest.fixture
async def small_pool_db(settings: Settings) -> AsyncIterator[Database]:
    """A real pool of two connections and no overflow."""
    tight = settings.model_copy(update={"pool_size": 2, "max_overflow": 0, "pool_timeout": 2})
    database = Database(tight)
    await database.connect()
    try:
        yield database
    finally:
        await database.close()


async def stale_calls(users: UserRepository, named: NamedUsers, metrics: MetricsRepository) -> Any:
    """Every kind of repository call, each expected to refuse."""
    yield users.get(1)
    yield users.get(1, cached=False)
    yield users.get_by_username("stale")
    yield users.add(UserFactory.build(username="stale"))
    yield users.add_many([UserFactory.build(username="stale2")])
    yield users.list()
    yield users.count()
    yield users.exists(username="stale")
    yield users.delete(1)
    yield named.starting_with("s")  # an app's own method
    yield named.list()
    yield metrics.latest("pnl")


async def test_stale_repository_refuses_holds_nothing_writes_nothing(
    small_pool_db: Database,
) -> None:
    db = small_pool_db
    async with db.unit_of_work() as uow:
        users, named, metrics = uow.users, uow.repository(NamedUsers), uow.metrics
    for _ in range(5):  # more uses than the pool has connections
        async for call in stale_calls(users, named, metrics):
            with pytest.raises(UnitOfWorkStateError, match="unit of work has ended"):
                await call
    with pytest.raises(UnitOfWorkStateError):
        users.session  # noqa: B018
    assert db.pool_status()["checkedout"] == 0
    # New units of work still get connections, and nothing stale was written.
    for _ in range(3):
        async with db.unit_of_work() as uow:
            stmt = select(func.count()).select_from(User).where(User.username.like("stale%"))
            assert (await uow.session.execute(stmt)).scalar_one() == 0
    assert db.pool_status()["checkedout"] == 0


async def test_stale_repository_after_an_exception_refuses_too(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.unit_of_work() as uow:
            users = uow.users
            raise RuntimeError("leave")
    with pytest.raises(UnitOfWorkStateError):
        await users.get(1)


# -- an app's own UnitOfWork class -----------------------------------------------------


async def test_database_builds_the_apps_unit_of_work(settings: Settings) -> None:
    async with isolated(settings, AppUoW) as db:
        uow = db.unit_of_work()
        assert type(uow) is AppUoW
        async with uow as entered:
            assert entered is uow
            await entered.users.add_many([UserFactory.build(username=n) for n in ("zed", "zoe")])
            assert [u.username for u in await entered.named_users.starting_with("z")] == [
                "zed",
                "zoe",
            ]
            await entered.commit()
        assert await count_in_run(db, "z") == 2
        calls: list[type[UnitOfWork]] = []

        async def record(uow: AppUoW) -> None:
            calls.append(type(uow))

        await db.run(record)
        assert calls == [AppUoW]
        # The library's services accept the app's Database.
        async with db.unit_of_work() as uow:
            portfolio = await uow.portfolios.add(PortfolioFactory.build())
            await uow.commit()
        assert await library_service(db, portfolio.id) is True


async def test_context_managers_and_plain_database(real_db: Database, settings: Settings) -> None:
    async with real_db.unit_of_work() as uow:
        await uow.users.add(UserFactory.build(username="quinn"))
        await uow.commit()
    assert await read_with_context_managers(settings, "qu") == ["quinn"]
    assert await library_only(settings) == 1


def test_unit_of_work_class_must_be_a_unit_of_work(settings: Settings) -> None:
    with pytest.raises(TypeError, match=r"subclass of alpha_data\.UnitOfWork"):
        Database(settings, unit_of_work_class=dict)  # type: ignore[call-overload]


async def test_fastapi_dependency_gives_the_apps_unit_of_work(real_db: Database) -> None:
    async with real_db.unit_of_work() as uow:
        await uow.users.add_many([UserFactory.build(username=n) for n in ("kim", "kai", "lu")])
        await uow.commit()
    app_db = make_database(real_db.settings)
    app = build_app(app_db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.get("/named/k")
            assert r.status_code == 200 and r.json() == ["kim", "kai"]
            assert (await client.get("/count")).json() == 3
    await app_db.close()
    # The same route on a Database that builds plain UnitOfWorks is a wiring bug.
    wrong = build_app(real_db)  # type: ignore[arg-type]
    async with wrong.router.lifespan_context(wrong):
        transport = httpx.ASGITransport(app=wrong, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            with pytest.raises(TypeError, match="unit_of_work_class=AppUoW"):
                await client.get("/named/k")


# -- Page --------------------------------------------------------------------------------


async def test_page_iterates_and_counts_its_items(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.users.add_many([UserFactory.build() for _ in range(3)])
        page = await uow.users.list(limit=2)
    assert isinstance(page, Page) and len(page) == 2
    assert [u.id for u in page] == [u.id for u in page.items]
    assert page.next_cursor is not None
