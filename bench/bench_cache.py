"""Benchmark of the cache layer against raw redis-py, ratios measured in the same run.

* hit: ``uow.users.get(id)`` served from Redis as an attached ORM object, vs
  ``redis.get(key)`` + ``orjson.loads`` of the very same bytes (goal ≤ 1.3x).
* miss: ``uow.users.get(id)`` when the entry is absent (it queries PostgreSQL
  and stores the value in the background), vs the undecorated method plus one
  raw ``redis.get`` (goal ≤ 1.1x: a miss costs at most one Redis round trip).

Both sides run interleaved, sample by sample, in rounds, so drift of the
machine hits them alike. Each sample opens its unit of work outside the
timer; only the read is timed. The run creates and drops its own database
(migrated with Alembic) and uses a Redis prefix of its own.

    python bench/bench_cache.py [--quick] [DB_SERVER_URL] [REDIS_URL]
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from alpha_data import Database, Settings
from alpha_data.models import Role, User
from bench.setup import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent

Sample = Callable[[], Awaitable[float]]


# -- its own database ----------------------------------------------------------


# -- measuring -----------------------------------------------------------------


async def _interleaved(ours: Sample, baseline: Sample, rounds: int, per_round: int) -> list[float]:
    """Median ms of each side, samples alternating."""
    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        for _ in range(per_round):
            mine.append(await ours())
            theirs.append(await baseline())
    return [statistics.median(mine) * 1000, statistics.median(theirs) * 1000]


def _row(name: str, medians: list[float], goal: float) -> dict[str, Any]:
    ours, baseline = medians
    return {
        "name": name,
        "ours_median_ms": round(ours, 4),
        "baseline_median_ms": round(baseline, 4),
        "ratio": round(ours / baseline, 3),
        "goal": goal,
    }


async def _measure(db: Database, quick: bool) -> list[dict[str, Any]]:
    async with db.unit_of_work() as uow:
        user = await uow.users.add(
            User(username="bench", email="bench@example.com", password_hash="x", role=Role.TRADER)
        )
        await uow.commit()
    uid = user.id
    key = f"{db.cache.prefix}:users:get:{uid}"
    client = db.redis
    async with db.unit_of_work() as uow:
        await uow.users.get(uid)  # warm: entry stored, tags exist
    await db.cache.drain()

    async def hit() -> float:
        async with db.unit_of_work() as uow:
            started = time.perf_counter()
            got = await uow.users.get(uid)
            elapsed = time.perf_counter() - started
        assert got is not None
        return elapsed

    async def raw_get() -> float:
        started = time.perf_counter()
        orjson.loads(await client.get(key))
        return time.perf_counter() - started

    async def miss() -> float:
        await client.delete(key)
        async with db.unit_of_work() as uow:
            started = time.perf_counter()
            got = await uow.users.get(uid)
            elapsed = time.perf_counter() - started
        await db.cache.drain()  # the background store, outside the timer
        assert got is not None
        return elapsed

    async def plain_plus_get() -> float:
        async with db.unit_of_work() as uow:
            repo = uow.users
            plain = type(repo).get.__wrapped__  # the method without the decorator
            started = time.perf_counter()
            await plain(repo, uid)
            await client.get(key)
            elapsed = time.perf_counter() - started
        return elapsed

    for sample in (hit, raw_get, miss, plain_plus_get):  # warm-up
        for _ in range(20):
            await sample()
    hits = (5, 300) if quick else (10, 1500)
    misses = (5, 60) if quick else (10, 300)
    hit_row = _row(
        "cache hit: users.get → attached ORM object vs redis.get + orjson.loads",
        await _interleaved(hit, raw_get, *hits),
        1.3,
    )
    miss_row = _row(
        "cache miss: users.get (query, store in background) vs undecorated + redis.get",
        await _interleaved(miss, plain_plus_get, *misses),
        1.1,
    )
    stats = db.cache.stats()
    assert stats.errors == 0, stats
    return [hit_row, miss_row]


async def run(url: str, *, quick: bool) -> list[dict[str, Any]]:
    """Measure on the (already migrated) benchmark database at ``url``."""
    settings = Settings(
        database_url=url,
        redis_url=REDIS_URL,
        cache_prefix=f"bench:{uuid.uuid4().hex[:8]}",
        # Generous: a test suite pausing the shared Redis must not abort
        # the run (timeouts cost nothing while nothing times out).
        redis_socket_timeout=5.0,
        _env_file=None,  # type: ignore[call-arg]
    )
    db = Database(settings)
    try:
        await db.connect()
        return await _measure(db, quick)
    finally:
        await db.cache.clear()
        await db.close()
