"""An application-style extension of alpha_data that ``mypy --strict`` must accept.

An app adds a repository (``Repository[Model]``), a UnitOfWork subclass with
an attribute of its own, a Database that builds that subclass, ``db.run``
over it and a FastAPI route using it. ``assert_type`` makes the check fail
if any of those lose their types (``Self`` on the context managers, the
generic Database, ``run`` and the dependency, ``Page`` iteration).
tests/test_extension.py runs the same code against PostgreSQL.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import select
from typing_extensions import assert_type

from alpha_data import Database, Settings, UnitOfWork
from alpha_data.integrations.fastapi import UoW, lifespan, uow_dependency
from alpha_data.models import User
from alpha_data.repositories import Page, Repository, UserRepository
from alpha_data.services import get_cached_portfolio


class NamedUsers(Repository[User]):
    """An application's repository over a library model."""

    model = User

    async def starting_with(self, prefix: str) -> list[User]:
        """Users whose username starts with ``prefix``, by id."""
        stmt = select(User).where(User.username.startswith(prefix)).order_by(User.id)
        return list((await self.session.execute(stmt)).scalars())


class AppUoW(UnitOfWork):
    """The application's unit of work: the library's repositories plus its own."""

    @property
    def named_users(self) -> NamedUsers:
        """The app's repository, one per unit of work."""
        return self.repository(NamedUsers)


def make_database(settings: Settings) -> Database[AppUoW]:
    """The app's Database: every unit of work it builds is an AppUoW."""
    return Database(settings, unit_of_work_class=AppUoW)


async def usernames(uow: AppUoW, prefix: str) -> list[str]:
    """Names through the app's repository, the generic one and ``Page`` iteration."""
    found = await uow.named_users.starting_with(prefix)
    assert_type(found, list[User])
    page = await uow.repository(NamedUsers).list(limit=100)
    assert_type(page, Page[User])
    listed = [user.username for user in page if user.username.startswith(prefix)]
    assert_type(uow.repository(UserRepository), UserRepository)
    assert [user.username for user in found] == listed
    return listed


async def count_in_run(db: Database[AppUoW], prefix: str) -> int:
    """``db.run`` hands the function the app's unit of work and returns its result."""

    async def count(uow: AppUoW) -> int:
        return len(await uow.named_users.starting_with(prefix))

    result = await db.run(count)
    assert_type(result, int)
    return result


async def read_with_context_managers(settings: Settings, prefix: str) -> list[str]:
    """``async with`` keeps the subclass types (``Self``)."""
    async with make_database(settings) as db:
        assert_type(db, Database[AppUoW])
        async with db.unit_of_work(read_only=True) as uow:
            assert_type(uow, AppUoW)
            return await usernames(uow, prefix)


async def library_only(settings: Settings) -> int:
    """A Database without an app class builds plain UnitOfWorks."""
    async with Database(settings) as db:
        assert_type(db, Database[UnitOfWork])
        async with db.unit_of_work() as uow:
            assert_type(uow, UnitOfWork)
            return await uow.users.count()


async def library_service(db: Database[AppUoW], portfolio_id: int) -> bool:
    """The library's services take the app's Database (covariant in its unit of work)."""
    return await get_cached_portfolio(db, portfolio_id) is not None


#: The FastAPI dependency typed as the app's unit of work.
AppUoWDep = Annotated[AppUoW, Depends(uow_dependency(AppUoW), scope="function")]


def build_app(db: Database[AppUoW]) -> FastAPI:
    """Routes using the app's unit of work and the library's default one."""
    app = FastAPI(lifespan=lifespan(database=db))

    @app.get("/named/{prefix}")
    async def named(prefix: str, uow: AppUoWDep) -> list[str]:
        return await usernames(uow, prefix)

    @app.get("/count")
    async def count(uow: UoW) -> int:
        return await uow.users.count()

    return app
