"""Redis Cluster URLs: the client, and the cache's multi-key commands when keys share a slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from alpha_data import Database
from alpha_data.cache.backends import Store
from alpha_data.cache.redis_backend import RedisBackend
from alpha_data.redisio.client import is_cluster, redis_client
from alpha_data.testing.factories import UserFactory
from tests.scaleout.components import Components, RedisNode, start_redis_cluster
from tests.scaleout.conftest import PgPair, make_settings


@pytest.fixture(scope="module")
def cluster(components: Components) -> list[RedisNode]:
    return start_redis_cluster(components)


def cluster_url(nodes: list[RedisNode]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes[:2])


async def test_cluster_url_builds_a_cluster_client(cluster: list[RedisNode]) -> None:
    client = redis_client(cluster_url(cluster), socket_timeout=1.0)
    try:
        assert is_cluster(client)
        keys = [f"spread:{i}" for i in range(50)]  # land on every master
        for key in keys:
            await client.set(key, key)
        assert [await client.get(k) for k in keys] == [k.encode() for k in keys]
        assert len({key_slot(k.encode()) for k in keys}) > 1
    finally:
        await client.aclose()


async def test_cache_commands_work_when_a_hash_tag_pins_the_prefix(
    cluster: list[RedisNode],
) -> None:
    """The cache's Lua scripts and MULTI need one slot: ``{prefix}`` gives every key the same."""
    backend = RedisBackend(cluster_url(cluster), socket_timeout=1.0)
    prefix = "{alpha}"
    key = f"{prefix}:users:get:42"
    tags = [f"{prefix}:tag:users:*", f"{prefix}:tag:users:id:42"]
    fence = f"{prefix}:lsn"
    assert len({key_slot(k.encode()) for k in [key, *tags, fence]}) == 1
    try:
        tokens = await backend.fetch(key, tags)
        assert not isinstance(tokens, bytes)  # a miss: the current tag tokens
        seen = [t.decode() if isinstance(t, bytes) else t for t in tokens]
        stored = await backend.store(
            [Store(key, b'{"id":42}]', 60.0, tags, seen, ["i1", "i2"], 600.0, fence)]
        )
        assert stored == [True]
        entry = await backend.fetch(key, tags)
        assert isinstance(entry, bytes) and entry.endswith(b'{"id":42}]')  # a hit
        await backend.invalidate([key], tags[1:], ["b1"], 600.0, fence=fence, lsn=0x10)
        assert not isinstance(await backend.fetch(key, tags), bytes)
        assert await backend.delete_prefix(prefix) >= 1
    finally:
        await backend.close()


async def test_cached_reads_work_end_to_end_on_a_cluster(
    cluster: list[RedisNode], pg: PgPair
) -> None:
    """A Database on ``redis+cluster://`` pins its prefix to one slot: hits, then invalidation."""
    settings = make_settings(pg.primary_url, cluster_url(cluster))
    async with Database(settings) as db:
        assert db.cache.prefix.startswith("{") and db.cache.prefix.endswith("}")
        async with db.unit_of_work() as uow:
            user = await uow.users.add(UserFactory.build())
            await uow.commit()
        for _ in range(3):
            async with db.unit_of_work(read_only=True) as uow:
                assert (await uow.users.get(user.id)).username == user.username
            await db.cache.drain()
        stats = db.cache.stats()
        assert stats.hits >= 1 and stats.errors == 0
        async with db.unit_of_work() as uow:
            (await uow.users.get(user.id, cached=False)).email = "moved@example.com"
            await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            assert (await uow.users.get(user.id)).email == "moved@example.com"
        assert db.cache.stats().errors == 0
        async with db.unit_of_work() as uow:
            await uow.users.delete(user.id)
            await uow.commit()
