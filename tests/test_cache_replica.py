"""Misses served by replicas are stored only when the replica covers every tag (issue 21 item 4).

Two levels, each against Redis (the Lua scripts) and memory:// (the same
rules in Python):

* the backend: tokens carry the highest LSN their tag has known, the fence
  the highest LSN of the invalidations since it was created (trusted only
  once a later invalidation confirms its nonce); an invalidation without an
  LSN deletes it and leaves its tokens without one; a store from a replica
  at ``R`` succeeds only if every tag is covered (token LSN <= R, else
  trusted fence <= R); both backends agree step by step on random histories;
* a Database with ``replica_urls`` (here the primary itself, so no replica is
  ever usable; the route of a read is faked with a chosen replay LSN):
  its invalidations carry the primary's WAL position read after COMMIT, and
  a replica miss is stored once the replica has replayed past it.

The real standby with replay paused is in tests/scaleout/test_replica_cache.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import text

from alpha_data import Database, Settings
from alpha_data.cache import cached
from alpha_data.cache.backends import (
    NO_FENCE,
    STORED,
    UNCOVERED,
    CacheBackend,
    Store,
    lsn_text,
    make_cache_backend,
    new_tokens,
)
from alpha_data.cache.cache import Cache
from alpha_data.cache.invalidation import ROUTE_KEY
from alpha_data.cache.redis_backend import RedisBackend
from alpha_data.models import User
from alpha_data.repositories.users import USER_ID, UserRepository
from alpha_data.testing import truncate_all
from alpha_data.testing.factories import UserFactory
from tests.streams_tools import throwaway_redis

TTL = 600.0

# -- the backend: tokens, fence, covered stores --------------------------------------


@pytest.fixture(params=["redis", "memory"])
async def backend(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Any]:
    """A backend of each kind, keys under this test's prefix (deleted afterwards)."""
    url = "memory://" if request.param == "memory" else settings.redis_url
    made = make_cache_backend(settings.model_copy(update={"redis_url": url}))
    try:
        yield made
    finally:
        await made.delete_prefix(f"{settings.cache_prefix}:")
        await made.close()


class Keys:
    """The key layout of one test (as Cache builds it)."""

    def __init__(self, prefix: str) -> None:
        self.fence = f"{prefix}:lsn"
        self.entry = f"{prefix}:users:get:1"
        self.tags = [f"{prefix}:tag:users:*", f"{prefix}:tag:users:id:1"]
        #: The fence nonce the test's writer got back last (it confirms it next time).
        self.nonce = ""


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.cache_prefix)


async def bump(
    backend: CacheBackend,
    keys: Keys,
    lsn: int | None,
    tags: Sequence[str] = (),
    *,
    confirm: bool = True,
) -> None:
    """An invalidation of ``tags`` (default: the per-row tag) carrying ``lsn``, sent by
    the test's writer (which confirms the nonce it got back last, unless told not to)."""
    chosen = list(tags) or keys.tags[1:]
    fresh = new_tokens(len(chosen), "b")
    keys.nonce = await backend.invalidate(
        [], chosen, fresh, TTL, fence=keys.fence, lsn=lsn, confirm=keys.nonce if confirm else ""
    )


async def create_fence(backend: CacheBackend, keys: Keys, lsn: int = 0x100) -> None:
    """A first invalidation (of an unrelated tag): the fence exists, trusted from the next."""
    await bump(backend, keys, lsn, tags=["unrelated"])


async def token(backend: CacheBackend, keys: Keys, tag: str) -> str:
    """The current token of ``tag`` ('' when none)."""
    got = await backend.fetch(keys.entry, [tag])
    assert isinstance(got, list)
    return got[0].decode()


async def fence(backend: CacheBackend, keys: Keys) -> str | None:
    """The fence's value: '<lsn>' trusted, '<lsn>/<until>' not yet, None missing."""
    got = await backend.fetch(keys.entry, [keys.fence])
    assert isinstance(got, list)
    return got[0].decode() or None


async def store_from(backend: CacheBackend, keys: Keys, replayed: int | None) -> int:
    """Read the tokens, then store an entry as a miss served at ``replayed`` (None: primary):
    STORED, MOVED, UNCOVERED (the replica is behind) or NO_FENCE."""
    seen = await backend.fetch(keys.entry, keys.tags)
    assert isinstance(seen, list)
    fresh = ["i1.0", "i1.1"]
    entry = Store(keys.entry, b'{"id":1}]', 60.0, keys.tags, seen, fresh, TTL, keys.fence, replayed)
    (outcome,) = await backend.store([entry])
    return outcome


async def test_tokens_carry_the_highest_lsn_their_tag_has_known(
    backend: CacheBackend, keys: Keys
) -> None:
    tag = keys.tags[1]
    await create_fence(backend, keys)
    await bump(backend, keys, 0x500)
    assert (await token(backend, keys, tag)).endswith("@" + lsn_text(0x500))
    assert await fence(backend, keys) == lsn_text(0x500)
    # A relay delivering an older commit late (its LSN read earlier): nothing goes back.
    await bump(backend, keys, 0x300)
    assert (await token(backend, keys, tag)).endswith("@" + lsn_text(0x500))
    assert await fence(backend, keys) == lsn_text(0x500)
    await bump(backend, keys, 0x900)
    assert (await token(backend, keys, tag)).endswith("@" + lsn_text(0x900))
    # A tag never bumped before takes the fence: its lost bumps (if any) are below it.
    await bump(backend, keys, 0x700, tags=[keys.tags[0]])
    assert (await token(backend, keys, keys.tags[0])).endswith("@" + lsn_text(0x900))


async def test_a_replica_miss_is_stored_only_when_every_tag_is_covered(
    backend: CacheBackend, keys: Keys
) -> None:
    assert await store_from(backend, keys, 0x10_000) == NO_FENCE  # no fence: cold tags unknown
    await create_fence(backend, keys)
    await bump(backend, keys, 0x500)  # row tag b@500, fence 500; the epoch tag has none
    assert await store_from(backend, keys, 0x4FF) == UNCOVERED  # may miss the commit at 0x500
    assert await store_from(backend, keys, 0x500) == STORED
    got = await backend.fetch(keys.entry, keys.tags)
    assert isinstance(got, bytes)  # a hit for every reader from now on
    await bump(backend, keys, 0x600)
    assert await store_from(backend, keys, 0x5FF) == UNCOVERED
    assert await store_from(backend, keys, 0x600) == STORED


async def test_a_new_fence_is_trusted_only_once_a_later_invalidation_confirms_it(
    backend: CacheBackend, keys: Keys
) -> None:
    """An LSN read before a bump that was lost with the old fence must not become the bound:
    only an LSN read after the writer learned the new fence's nonce may."""
    await bump(backend, keys, 0x500)
    assert (await fence(backend, keys) or "").startswith(lsn_text(0x500) + "/")
    assert "@" not in await token(backend, keys, keys.tags[1])
    assert await store_from(backend, keys, 0xFFFF) == NO_FENCE
    await bump(backend, keys, 0x600, confirm=False)  # another writer, which never saw it
    assert "@" not in await token(backend, keys, keys.tags[1])
    assert await store_from(backend, keys, 0xFFFF) == NO_FENCE
    await bump(backend, keys, 0x700, tags=["unrelated"])  # the creator again: confirmed
    assert await fence(backend, keys) == lsn_text(0x700)
    assert await store_from(backend, keys, 0x6FF) == UNCOVERED
    assert await store_from(backend, keys, 0x700) == STORED


async def test_a_nonce_of_an_earlier_fence_confirms_no_new_one(
    backend: CacheBackend, keys: Keys
) -> None:
    await bump(backend, keys, 0x500)  # fence 1; the writer holds its nonce
    stale = keys.nonce
    await bump(backend, keys, None)  # deleted
    await bump(backend, keys, 0x600, confirm=False)  # fence 2, created by someone else
    keys.nonce = stale
    await bump(backend, keys, 0x700, tags=["unrelated"])
    assert (await fence(backend, keys) or "").startswith(lsn_text(0x700) + "/")
    assert await store_from(backend, keys, 0xFFFF) == NO_FENCE


async def test_an_invalidation_without_an_lsn_stops_replica_stores_until_the_fence_is_trusted(
    backend: CacheBackend, keys: Keys
) -> None:
    await create_fence(backend, keys)
    await bump(backend, keys, 0x500)
    await bump(backend, keys, None)  # a Database without replicas (or the primary unreachable)
    assert await fence(backend, keys) is None
    assert "@" not in await token(backend, keys, keys.tags[1])
    assert await store_from(backend, keys, 0xFFFF_FFFF) == NO_FENCE
    await bump(backend, keys, 0x900, tags=["unrelated"])  # a new fence, not trusted yet
    assert await store_from(backend, keys, 0xFFFF_FFFF) == NO_FENCE
    await bump(backend, keys, 0xA00, tags=["unrelated"])  # trusted: past the unknown commit
    assert await store_from(backend, keys, 0x9FF) == UNCOVERED
    assert await store_from(backend, keys, 0xA00) == STORED
    await bump(backend, keys, None)
    assert await store_from(backend, keys, None) == STORED  # the primary's reads are stored as ever


async def test_a_fence_refresh_creates_and_confirms_but_never_raises_a_trusted_fence(
    backend: CacheBackend, keys: Keys
) -> None:
    """The refresh a refused replica store triggers (no tags): raising a trusted fence
    would only make cold tags harder to fill."""
    refresh = backend.invalidate
    keys.nonce = await refresh([], [], [], TTL, fence=keys.fence, lsn=0x500)
    assert keys.nonce and (await fence(backend, keys) or "").startswith(lsn_text(0x500) + "/")
    keys.nonce = await refresh([], [], [], TTL, fence=keys.fence, lsn=0x600, confirm=keys.nonce)
    assert keys.nonce == "" and await fence(backend, keys) == lsn_text(0x600)
    await refresh([], [], [], TTL, fence=keys.fence, lsn=0x900)
    assert await fence(backend, keys) == lsn_text(0x600)
    await bump(backend, keys, 0x900, tags=["unrelated"])  # a real invalidation raises it
    assert await fence(backend, keys) == lsn_text(0x900)


async def test_a_lost_tag_is_bounded_by_the_fence(backend: CacheBackend, keys: Keys) -> None:
    await create_fence(backend, keys)
    await bump(backend, keys, 0x500)
    await bump(backend, keys, 0x800, tags=[keys.tags[0]])  # fence 800
    await backend.invalidate([keys.tags[1]], [], [], TTL, fence=keys.fence, lsn=0x800)  # lost
    assert await token(backend, keys, keys.tags[1]) == ""
    assert (
        await store_from(backend, keys, 0x7FF) == UNCOVERED
    )  # the lost bump may be up to the fence
    assert await store_from(backend, keys, 0x800) == STORED


async def test_a_cleared_cache_stores_no_replica_miss_until_a_new_fence_is_trusted(
    backend: CacheBackend, keys: Keys
) -> None:
    await create_fence(backend, keys)
    await bump(backend, keys, 0x500)
    await backend.delete_prefix(keys.fence.rsplit(":", 1)[0] + ":")
    assert await fence(backend, keys) is None
    assert await store_from(backend, keys, 0xFFFF) == NO_FENCE
    await create_fence(backend, keys, 0x600)
    assert await store_from(backend, keys, 0xFFFF) == NO_FENCE
    await bump(backend, keys, 0x700, tags=["unrelated"])
    assert await store_from(backend, keys, 0x700) == STORED


async def test_redis_and_memory_agree_on_random_histories(settings: Settings) -> None:
    """The Lua scripts and their Python twin, step by step (tokens, fence, store verdicts)."""
    redis = make_cache_backend(settings)
    memory = make_cache_backend(settings.model_copy(update={"redis_url": "memory://"}))
    keys = Keys(settings.cache_prefix)
    tags = [f"{settings.cache_prefix}:tag:t{i}" for i in range(4)]
    rnd = random.Random(21)
    nonces = ["", ""]  # the fence nonce each backend returned last (they differ)

    async def state(backend: CacheBackend) -> list[str]:
        got = await backend.fetch(keys.entry + "x", [*tags, keys.fence])
        assert isinstance(got, list)
        # Each backend makes its own fence nonces: compare the LSN and the state only.
        return [g.decode().split("/")[0] + ("/" if b"/" in g else "") for g in got]

    try:
        for step in range(600):
            op = rnd.random()
            chosen = rnd.sample(tags, rnd.randint(1, 3))
            if op < 0.4:
                lsn = None if rnd.random() < 0.15 else rnd.randint(0, 40) * 16
                fresh = [f"b{step:04x}.{i}" for i in range(len(chosen))]
                confirm = rnd.random() < 0.5  # this writer, or one that never saw the fence
                for i, b in enumerate((redis, memory)):
                    nonces[i] = await b.invalidate(
                        [keys.entry],
                        chosen,
                        fresh,
                        TTL,
                        fence=keys.fence,
                        lsn=lsn,
                        confirm=nonces[i] if confirm else "",
                    )
                assert bool(nonces[0]) == bool(nonces[1]), step
            elif op < 0.47:  # a fence refresh (no tags): create, confirm, never raise
                lsn = rnd.randint(0, 40) * 16
                confirm = rnd.random() < 0.7
                for i, b in enumerate((redis, memory)):
                    nonces[i] = await b.invalidate(
                        [],
                        [],
                        [],
                        TTL,
                        fence=keys.fence,
                        lsn=lsn,
                        confirm=nonces[i] if confirm else "",
                    )
                assert bool(nonces[0]) == bool(nonces[1]), step
            elif op < 0.85:
                seen = await redis.fetch(keys.entry, chosen)
                assert seen == await memory.fetch(keys.entry, chosen), step
                if isinstance(seen, bytes):
                    continue
                if rnd.random() < 0.2:  # a reader that saw older tokens
                    seen = [b"" if rnd.random() < 0.5 else t for t in seen]
                replayed = None if rnd.random() < 0.3 else rnd.randint(0, 45) * 16
                fresh = [f"i{step:04x}.{i}" for i in range(len(chosen))]
                entry = Store(
                    keys.entry, b"1]", TTL, chosen, seen, fresh, TTL, keys.fence, replayed
                )
                verdicts = [await b.store([entry]) for b in (redis, memory)]
                assert verdicts[0] == verdicts[1], (step, verdicts)
            else:  # Redis evicts a tag key, or the fence
                lost = rnd.choice(chosen) if op < 0.95 else keys.fence
                for b in (redis, memory):
                    await b.invalidate([lost], [], [], TTL, fence=keys.fence + "x", lsn=1)
            assert await state(redis) == await state(memory), step
    finally:
        await redis.delete_prefix(f"{settings.cache_prefix}:")
        await redis.close()
        await memory.close()


async def test_the_invalidation_script_is_sent_again_after_a_redis_restart(keys: Keys) -> None:
    """Redis forgets loaded scripts when it restarts: EVALSHA fails, the script is re-sent."""
    async with throwaway_redis() as server:
        backend = RedisBackend(server.url, socket_timeout=2.0)
        try:
            await create_fence(backend, keys)
            await backend.client.script_flush()  # what a restart does to the script cache
            await bump(backend, keys, 0x500)
            assert (await token(backend, keys, keys.tags[1])).endswith("@" + lsn_text(0x500))
            await backend.client.script_flush()
            assert await store_from(backend, keys, 0x500) == STORED
        finally:
            await backend.close()


class Recorder:
    """A memory backend and a WAL position that log what happens, in order."""

    def __init__(self) -> None:
        self.backend = make_cache_backend(Settings(_env_file=None, redis_url="memory://"))
        self.events: list[str] = []
        self.lsn = 0x100

    async def position(self, fences: bool) -> int:
        self.events.append("lsn")
        self.lsn += 0x10
        return self.lsn

    def cache(self) -> Cache:
        cache = Cache(self.backend, prefix="rec", ttl=60, negative_ttl=5, commit_lsn=self.position)
        invalidate = self.backend.invalidate

        async def logged(*args: Any, **kw: Any) -> str:
            self.events.append("invalidate")
            pending: str = await invalidate(*args, **kw)
            return pending

        self.backend.invalidate = logged  # type: ignore[method-assign]
        return cache


async def test_a_fence_refresh_reads_each_position_after_the_previous_reply() -> None:
    """The second (confirming) invalidation's LSN must be read after the first's reply."""
    recorder = Recorder()
    cache = recorder.cache()
    await cache.delivery.refresh_fence()
    assert recorder.events == ["lsn", "invalidate", "lsn", "invalidate"]
    assert cache.delivery.fence_nonce == ""  # trusted
    await cache.delivery.refresh_fence()  # a trusted fence: one look, nothing raised
    assert recorder.events[4:] == ["lsn", "invalidate"]


async def test_only_stores_refused_for_want_of_a_fence_refresh_it_at_most_once_a_second() -> None:
    recorder = Recorder()
    cache = recorder.cache()
    keys = Keys("rec")
    tags = [cache.tag_key("users:id:1")]

    async def replica_store(replayed: int) -> None:
        seen = await recorder.backend.fetch(keys.entry, tags)
        assert isinstance(seen, list)
        cache.store_later(keys.entry, b"1]", 60.0, tags, seen, replayed)
        await cache.drain()

    await replica_store(0x50)  # no fence at all: refused, and the fence is made
    assert cache.stats().replica_uncovered == 1 and recorder.events.count("invalidate") == 2
    await cache.invalidate(["users:id:1"])  # a commit: the tag now carries a newer LSN
    await replica_store(0x50)  # behind that LSN: refused, but a fence is there
    await replica_store(0x50)
    assert cache.stats().replica_uncovered == 3 and recorder.events.count("invalidate") == 3
    await recorder.backend.delete_prefix("rec:")
    await replica_store(0x50)  # within the second since the last refresh: none
    assert recorder.events.count("invalidate") == 3
    await replica_store(recorder.lsn)
    assert cache.stats().stores == 0
    await cache.close()


# -- a Database with replicas: invalidations carry the commit's WAL position -------


class ReplicaUsers(UserRepository):
    """users.get as if its replica had replayed ``replayed`` when the route was chosen.

    The session really reads the primary (routed Databases here have no
    usable replica); the route is marked afterwards, before the cache decides.
    With ``gate`` set, the reader waits after its query (a slow leader).
    """

    replayed = 0
    gate: asyncio.Event | None = None
    queried = asyncio.Event()

    @cached(USER_ID)
    async def get_on_replica(self, id: int) -> User | None:
        got = await UserRepository.get(self, id, cached=False)
        self.session.info[ROUTE_KEY].replay_lsn = ReplicaUsers.replayed
        if ReplicaUsers.gate is not None:
            ReplicaUsers.queried.set()
            await ReplicaUsers.gate.wait()
        return got


def routed_database(settings: Settings, backend: str) -> Database:
    """A Database whose ``replica_urls`` names the primary itself: never a usable replica
    (it is not in recovery), but every commit is stamped with the primary's WAL position."""
    update: dict[str, Any] = {"replica_urls": [settings.database_url]}
    if backend == "memory":
        update["redis_url"] = "memory://"
    return Database(settings.model_copy(update=update))


@pytest.fixture(params=["redis", "memory"])
async def routed(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Database]:
    """A routed Database (``routed_database``) whose fence two commits made trusted."""
    database = routed_database(settings, request.param)
    try:
        for _ in range(2):  # create the fence, then trust it
            async with database.unit_of_work() as uow:
                await uow.users.add(UserFactory.build())
                await uow.commit()
        yield database
    finally:
        await database.close()
        await truncate_all(settings.database_url)


INSERT_LSN = text("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint")


async def position(db: Database) -> int:
    """The primary's WAL insert position now."""
    async with db.engine.connect() as conn:
        return int(await conn.scalar(INSERT_LSN))


async def read_on_replica(db: Database, user_id: int, replayed: int) -> tuple[User | None, int]:
    """One cached read served by a 'replica' at ``replayed``: (user, entries stored so far)."""
    ReplicaUsers.replayed = replayed
    async with db.unit_of_work(read_only=True) as uow:
        got = await ReplicaUsers(uow.session).get_on_replica(user_id)
    await db.cache.drain()
    return got, db.cache.stats().stores


async def rename(db: Database, user_id: int, email: str) -> None:
    async with db.unit_of_work() as uow:
        user = await uow.users.get(user_id, cached=False)
        assert user is not None
        user.email = email
        await uow.commit()


async def test_a_replica_miss_is_stored_once_the_replica_replayed_the_last_commit(
    routed: Database,
) -> None:
    db = routed
    stored = db.cache.stats().stores
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build(email="one@x.io"))
        before = int(await uow.session.scalar(INSERT_LSN))  # the last statement before COMMIT
        await uow.commit()
    # A replica at the position just before COMMIT may not show the insert.
    assert (await read_on_replica(db, user.id, before))[1] == stored
    after = await position(db)
    got, stores = await read_on_replica(db, user.id, after)
    assert got is not None and got.email == "one@x.io" and stores == stored + 1
    async with db.unit_of_work() as uow:  # now a hit, wherever it reads
        hits = db.cache.stats().hits
        assert (await ReplicaUsers(uow.session).get_on_replica(user.id)).email == "one@x.io"
        assert db.cache.stats().hits == hits + 1
    await rename(db, user.id, "two@x.io")
    assert (await read_on_replica(db, user.id, after))[1] == stored + 1  # may miss the rename
    got, stores = await read_on_replica(db, user.id, await position(db))
    assert got is not None and got.email == "two@x.io" and stores == stored + 2


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_without_any_write_a_refused_replica_store_makes_the_fence(
    settings: Settings, backend: str
) -> None:
    """A read-only deployment (rows written elsewhere, long ago): the first replica miss is
    refused for want of a fence, and the Database creates and confirms one itself."""
    async with routed_database(settings, backend) as db:
        try:
            async with db.engine.begin() as conn:  # no unit of work: no invalidation at all
                user_id = await conn.scalar(
                    text(
                        "INSERT INTO users (username, email, password_hash)"
                        " VALUES ('quiet', 'quiet@x.io', 'x') RETURNING id"
                    )
                )
            replayed = await position(db)
            got, stores = await read_on_replica(db, user_id, replayed)
            assert got is not None and stores == 0
            assert db.cache.stats().replica_uncovered == 1  # drain() also ran the refresh
            got, stores = await read_on_replica(db, user_id, await position(db))
            assert got is not None and got.email == "quiet@x.io" and stores == 1
        finally:
            await truncate_all(settings.database_url)


async def test_followers_of_a_replica_read_query_for_themselves(routed: Database) -> None:
    """A replica leader's result is not handed to readers that may be on the primary."""
    db = routed
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build())
        await uow.commit()
    ReplicaUsers.replayed = await position(db)
    ReplicaUsers.queried, ReplicaUsers.gate = asyncio.Event(), asyncio.Event()

    async def one() -> User | None:
        async with db.unit_of_work(read_only=True) as uow:
            return await ReplicaUsers(uow.session).get_on_replica(user.id)

    try:
        leader = asyncio.create_task(one())
        await asyncio.wait_for(ReplicaUsers.queried.wait(), 10)
        followers = [asyncio.create_task(one()) for _ in range(3)]
        deadline = time.monotonic() + 10
        while db.cache.stats().misses < 4:  # every follower found the leader's flight
            assert time.monotonic() < deadline, "the followers never missed"
            await asyncio.sleep(0.005)
        ReplicaUsers.gate.set()
        results = await asyncio.gather(leader, *followers)
    finally:
        ReplicaUsers.gate.set()
        ReplicaUsers.gate = None
    assert all(r is not None and r.id == user.id for r in results)
    assert db.cache.stats().coalesced == 0
    await db.cache.drain()
    assert db.cache.stats().stores >= 1  # the replica's result itself is covered


async def test_a_writer_without_replicas_turns_replica_stores_off_until_a_refresh(
    routed: Database, settings: Settings
) -> None:
    """Another process on the same prefix whose commits carry no LSN (Redis only: shared):
    it deletes the fence, so its tags have no bound; the next refused replica store makes
    the reader create and confirm a new fence, past that commit."""
    if routed.settings.redis_url.startswith("memory://"):
        pytest.skip("two Databases share a cache only through Redis")
    async with db_without_replicas(settings) as plain, plain.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build())
        await uow.commit()
    uncovered = routed.cache.stats().replica_uncovered
    assert (await read_on_replica(routed, user.id, await position(routed)))[1] == 0
    assert routed.cache.stats().replica_uncovered == uncovered + 1
    got, stores = await read_on_replica(routed, user.id, await position(routed))
    assert got is not None and got.id == user.id and stores == 1


def db_without_replicas(settings: Settings) -> Database:
    return Database(settings.model_copy(update={"replica_urls": []}))
