"""What a request pays: the unit of work opened and closed inside the timer.

* cache hit: a fresh read-only unit of work + ``users.get`` served from Redis,
  vs raw ``GET`` + ``orjson.loads`` of the same bytes (goal <= 1.2x);
* concurrency: bursts of 32 concurrent gets (each its own read-only unit of
  work) on a pool of 5 connections, vs 32 ``pool.acquire`` + ``fetchrow`` on an
  asyncpg pool of 5 (goal <= 1.25x per burst);
* memory: RSS after 1M cached reads vs after 10k (goal within 10%).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid

import asyncpg
import orjson

from alpha_data import Database, Settings
from alpha_data.models import User
from bench.bench_repositories import USER_SQL
from bench.harness import Result, compare
from bench.setup import REDIS_URL, dsn

BURST = 32
POOL = 5


def _settings(url: str, **extra: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        database_url=url,
        redis_url=REDIS_URL,
        cache_prefix=f"bench:load:{uuid.uuid4().hex[:8]}",
        _env_file=None,
        **extra,
    )


async def _seed(db: Database) -> list[int]:
    async with db.unit_of_work() as uow:
        users = await uow.users.add_many(
            User(username=f"load{i}", email=f"load{i}@x.io", password_hash="x") for i in range(64)
        )
        await uow.commit()
    return [u.id for u in users]


async def _cache_hit(db: Database, user_id: int, *, rounds: int, per_round: int) -> Result:
    async with db.unit_of_work(read_only=True) as uow:
        await uow.users.get(user_id)  # the miss that stores the entry
    await db.cache.drain()
    keys = [k async for k in db.redis.scan_iter(match=f"{db.settings.cache_prefix}:users:get:*")]
    assert keys, "the cached entry was not stored"
    key = keys[0]

    async def ours() -> None:
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.users.get(user_id) is not None

    async def raw() -> None:
        assert orjson.loads(await db.redis.get(key)) is not None

    return await compare(
        "cache hit, fresh read-only UoW inside the timer",
        ours,
        raw,
        baseline_name="redis GET + orjson.loads",
        goal="<= 1.2x",
        limit=1.2,
        rounds=rounds,
        per_round=per_round,
    )


async def _concurrent(url: str, ids: list[int], *, rounds: int, per_round: int) -> Result:
    db = Database(_settings(url, cache_enabled=False, pool_size=POOL, max_overflow=0))
    await db.connect()
    pool = await asyncpg.create_pool(dsn(url), min_size=POOL, max_size=POOL)
    burst_ids = [ids[i % len(ids)] for i in range(BURST)]

    async def one_ours(user_id: int) -> None:
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.users.get(user_id) is not None

    async def one_raw(user_id: int) -> None:
        async with pool.acquire() as conn:
            assert await conn.fetchrow(USER_SQL, user_id) is not None

    async def ours() -> None:
        await asyncio.gather(*(one_ours(i) for i in burst_ids))

    async def raw() -> None:
        await asyncio.gather(*(one_raw(i) for i in burst_ids))

    try:
        return await compare(
            f"{BURST} concurrent gets on {POOL} pooled connections (per burst)",
            ours,
            raw,
            baseline_name=f"asyncpg pool of {POOL}: acquire + fetchrow",
            goal="<= 1.25x",
            limit=1.25,
            rounds=rounds,
            per_round=per_round,
            warmup=5,
        )
    finally:
        await pool.close()
        await db.close()


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


#: Concurrent readers of the memory row (as a web worker serves requests; it also
#: overlaps Redis round trips, which keeps 1M reads inside the `make bench` budget).
READERS = 8


async def _reads(db: Database, ids: list[int], count: int) -> None:
    """``count`` cached reads by ``READERS`` concurrent tasks, 100 per read-only unit of work."""

    async def reader(first: int) -> None:
        for start in range(first * 100, count, READERS * 100):
            async with db.unit_of_work(read_only=True) as uow:
                for i in range(start, min(start + 100, count)):
                    await uow.users.get(ids[i % len(ids)])

    await asyncio.gather(*(reader(r) for r in range(READERS)))


async def _memory(db: Database, ids: list[int], *, total: int) -> Result:
    await _reads(db, ids, 10_000)
    gc.collect()
    small = _rss_kib()
    started = time.perf_counter()
    await _reads(db, ids, total - 10_000)
    seconds = time.perf_counter() - started
    gc.collect()
    large = _rss_kib()
    ratio = large / small
    return Result(
        name=f"memory: RSS after {total:,} cached reads vs after 10k",
        baseline="RSS after 10k reads",
        ours_median_ms=large / 1024,
        ours_p95_ms=float("nan"),
        baseline_median_ms=small / 1024,
        baseline_p95_ms=float("nan"),
        ratio=ratio,
        goal="<= 1.1x",
        met=ratio <= 1.1,
        note=f"MiB, not ms; {(total - 10_000) / seconds:,.0f} reads/s",
    )


async def run(url: str, *, quick: bool) -> list[Result]:
    """Request-level rows: unit of work inside the timer, concurrency, memory."""
    rounds, per_round = (4, 25) if quick else (10, 100)
    db = Database(_settings(url))
    await db.connect()
    try:
        ids = await _seed(db)
        for user_id in ids:  # fill the cache for the memory row
            async with db.unit_of_work(read_only=True) as uow:
                await uow.users.get(user_id)
        await db.cache.drain()
        results = [await _cache_hit(db, ids[0], rounds=rounds, per_round=per_round)]
        results.append(await _concurrent(url, ids, rounds=rounds, per_round=5 if quick else 20))
        results.append(await _memory(db, ids, total=100_000 if quick else 1_000_000))
        return results
    finally:
        await db.cache.clear()
        await db.close()
