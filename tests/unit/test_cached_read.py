"""CachedRead branch by branch, without servers: the in-process memory:// backend, bare sessions.

The decorated "repository" below answers from a dict and counts its calls, so
each test sees exactly when PostgreSQL would have been read. The end-to-end
behaviour against PostgreSQL and Redis is in tests/test_cache.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from alpha_data._sa_internals import add_persistent
from alpha_data.cache import cached
from alpha_data.cache.cache import Cache
from alpha_data.cache.cached_read import CachedRead
from alpha_data.cache.invalidation import CacheScope, scope_of
from alpha_data.cache.memory_backend import MemoryBackend
from alpha_data.cache.tags import TagSpec
from alpha_data.models import Portfolio
from alpha_data.repositories.pagination import Page

UNIT_ID = TagSpec("unit_portfolios", "id")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def portfolio(id: int, name: str = "p") -> Portfolio:
    return Portfolio(id=id, name=name, description=None, version=1, created_at=T0, updated_at=T0)


class Rows:
    """A stand-in for PostgreSQL: what the decorated reads return, and how often they ran."""

    def __init__(self) -> None:
        self.rows = {1: ("one", 1), 2: ("two", 2)}
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def read(self, id: int) -> Portfolio | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        row = self.rows.get(id)
        return None if row is None else portfolio(row[1], row[0])


class Repo:
    model = Portfolio

    def __init__(self, session: AsyncSession, rows: Rows) -> None:
        self.session = session
        self.rows = rows

    @cached(UNIT_ID)
    async def get(self, id: int) -> Portfolio | None:
        return await self.rows.read(id)

    @cached("unit_portfolios:pages")
    async def page(self, after: str | None = None) -> Page[Portfolio]:
        self.rows.calls += 1
        return Page([portfolio(1, "one"), portfolio(2, "two")], "cursor-2")


@pytest.fixture
async def cache() -> AsyncIterator[Cache]:
    cache = Cache(MemoryBackend(), prefix="unit", ttl=60, negative_ttl=30)
    yield cache
    await cache.close()


def repo_in_scope(cache: Cache, rows: Rows, *, reads: bool = True) -> Repo:
    """A repository on a fresh session with a cache scope, as a unit of work builds it."""
    session = AsyncSession()
    CacheScope(cache, reads=reads).bind(session)
    return Repo(session, rows)


def scope_of_repo(repo: Repo) -> CacheScope:
    scope = scope_of(repo.session)
    assert scope is not None
    return scope


def read_of(method: Any) -> CachedRead:
    read: CachedRead = method.cached_read
    return read


async def test_miss_then_hit_in_another_session(cache: Cache) -> None:
    rows = Rows()
    first = await repo_in_scope(cache, rows).get(1)
    await cache.drain()  # the background store
    second_repo = repo_in_scope(cache, rows)
    second = await second_repo.get(1)
    assert rows.calls == 1
    assert second is not first and (second.id, second.name) == (1, "one")
    assert second in second_repo.session  # attached, like a loaded object
    stats = cache.stats()
    assert (stats.misses, stats.hits, stats.bypassed) == (1, 1, 0)


async def test_a_none_result_is_cached_too(cache: Cache) -> None:
    rows = Rows()
    assert await repo_in_scope(cache, rows).get(99) is None
    await cache.drain()
    assert await repo_in_scope(cache, rows).get(99) is None
    assert rows.calls == 1 and cache.stats().hits == 1


async def test_no_scope_or_cached_false_reads_directly_and_counts_nothing(cache: Cache) -> None:
    rows = Rows()
    bare = Repo(AsyncSession(), rows)
    await bare.get(1)
    await repo_in_scope(cache, rows).get(1, cached=False)
    await repo_in_scope(cache, rows, reads=False).get(1)
    assert rows.calls == 3
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.bypassed) == (0, 0, 0)


def hold_portfolio_1(repo: Repo) -> None:
    """Put portfolio 1 in the session (kept referenced: the identity map is weak)."""
    repo.held = portfolio(1)  # type: ignore[attr-defined]
    key = Portfolio.__mapper__.identity_key_from_primary_key((1,))
    add_persistent(repo.session.sync_session, repo.held, key)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda repo: repo.session.add(portfolio(7)), "unflushed"),
        (
            lambda repo: scope_of_repo(repo).record(["unit_portfolios:id:1"]),
            "changed what the read depends on",
        ),
        (
            hold_portfolio_1,
            "already in the session",
        ),
    ],
    ids=["pending-changes", "read-your-writes", "held-object"],
)
async def test_bypass_rules(cache: Cache, setup: Any, reason: str) -> None:
    rows = Rows()
    repo = repo_in_scope(cache, rows)
    setup(repo)
    read = read_of(Repo.get)
    call = read.prepare(repo, (1,), {}, scope_of_repo(repo))
    assert call is not None
    assert reason in (read.bypass_reason(call) or "")
    await repo.get(1)
    assert rows.calls == 1 and cache.stats().bypassed == 1 and cache.stats().misses == 0


async def test_an_unkeyable_argument_bypasses(cache: Cache) -> None:
    rows = Rows()
    repo = repo_in_scope(cache, rows)
    scope = scope_of_repo(repo)
    assert read_of(Repo.get).prepare(repo, (object(),), {}, scope) is None
    await repo.get(1.5)  # type: ignore[arg-type]
    assert rows.calls == 1 and cache.stats().bypassed == 1


async def test_a_corrupt_entry_is_counted_and_read_again(cache: Cache) -> None:
    rows = Rows()
    repo = repo_in_scope(cache, rows)
    read = read_of(Repo.get)
    call = read.prepare(repo, (1,), {}, scope_of_repo(repo))
    assert call is not None
    result, seen = read.from_entry(call, b'["t1,t2",3,"other-layout",[]]')
    assert seen == [b"t1", b"t2"] and cache.stats().corrupt == 1
    assert result is not None and rows.calls == 0  # the miss path runs the query next


async def test_concurrent_misses_share_one_query(cache: Cache) -> None:
    rows = Rows()
    rows.gate = asyncio.Event()
    first = asyncio.ensure_future(repo_in_scope(cache, rows).get(2))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(repo_in_scope(cache, rows).get(2))
    await asyncio.sleep(0.01)
    rows.gate.set()
    a, b = await asyncio.gather(first, second)
    assert rows.calls == 1 and a is not b and a.name == b.name == "two"
    stats = cache.stats()
    assert (stats.misses, stats.coalesced) == (2, 1)


async def test_a_read_that_dirtied_its_tags_meanwhile_is_not_stored(cache: Cache) -> None:
    rows = Rows()
    repo = repo_in_scope(cache, rows)
    scope = scope_of_repo(repo)
    original = rows.read

    async def write_during_read(id: int) -> Portfolio | None:
        scope.record(["unit_portfolios:id:1"])  # a write of the same row, mid-query
        return await original(id)

    rows.read = write_during_read  # type: ignore[method-assign]
    await repo.get(1)
    await cache.drain()
    rows.read = original  # type: ignore[method-assign]
    await repo_in_scope(cache, rows).get(1)
    assert rows.calls == 2 and cache.stats().hits == 0


async def test_pages_are_cached_with_their_cursor(cache: Cache) -> None:
    rows = Rows()
    first = await repo_in_scope(cache, rows).page()
    await cache.drain()
    again = await repo_in_scope(cache, rows).page()
    assert rows.calls == 1 and cache.stats().hits == 1
    assert isinstance(again, Page) and again.next_cursor == "cursor-2"
    assert [(p.id, p.name) for p in again.items] == [(p.id, p.name) for p in first.items]


def test_a_list_result_needs_many_at_decoration_time() -> None:
    with pytest.raises(TypeError, match="many=True"):

        class Bad:
            model = Portfolio

            @cached(UNIT_ID)
            async def by_ids(self, id: int) -> list[Portfolio]:
                return []

    class Good:
        model = Portfolio

        @cached(UNIT_ID, many=True)
        async def by_ids(self, id: int) -> list[Portfolio]:
            return []

    assert read_of(Good.by_ids).method == "by_ids"


def test_a_tag_must_name_an_argument() -> None:
    with pytest.raises(TypeError, match="must name one argument"):

        @cached(TagSpec("unit_portfolios", "owner"))
        async def get(self: Any, id: int) -> Portfolio | None:
            return None
