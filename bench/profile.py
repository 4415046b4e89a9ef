"""Where a request's CPU goes: cProfile over the request loops, summed by layer.

``python -m bench.profile [--top N]`` profiles three loops on a throwaway
database (each op opens and closes a fresh read-only unit of work, as a
handler does):

* ``cache hit``: ``users.get`` served from Redis;
* ``get, cache off``: ``users.get`` from PostgreSQL;
* ``32 concurrent``: bursts of 32 concurrent gets on a pool of 5.

Each function's own time (``tottime``) is put in one bucket by the file it
lives in (session, pool, statement, rows, codec, hooks, driver, ...); time
the event loop spends blocked in ``epoll`` is idle, not CPU, and left out.
The shares, not the absolute times, are what to read (cProfile slows
Python code down by a roughly constant factor).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

from alpha_data import Database, Settings
from alpha_data.models import User
from bench.setup import REDIS_URL, bench_database

#: (bucket, substrings of a function's file or name), first match wins.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("idle (epoll)", ("select.epoll",)),
    ("socket send/recv (kernel)", ("_socket.socket",)),
    ("observability hooks", ("alpha_data/observability",)),
    ("unit of work + repository", ("alpha_data/uow.py", "alpha_data/repositories")),
    ("cache codec + decorator", ("alpha_data/cache",)),
    ("alpha_data other", ("alpha_data/",)),
    ("session create/close", ("sqlalchemy/orm/session.py", "sqlalchemy/ext/asyncio/session.py")),
    ("pool checkout/return", ("sqlalchemy/pool/",)),
    (
        "statement compile/cache lookup",
        ("sqlalchemy/sql/", "sqlalchemy/engine/default.py", "sqlalchemy/orm/context.py"),
    ),
    ("engine execute + events", ("sqlalchemy/engine/base.py", "sqlalchemy/event/")),
    (
        "row loading + results",
        ("sqlalchemy/orm/loading.py", "sqlalchemy/engine/result.py", "sqlalchemy/engine/cursor.py"),
    ),
    ("asyncpg adapter + greenlet", ("dialects/postgresql/asyncpg.py", "concurrency", "greenlet")),
    ("sqlalchemy other", ("sqlalchemy/",)),
    ("asyncpg driver", ("asyncpg/",)),
    ("redis client", ("redis/",)),
    ("asyncio event loop", ("asyncio/",)),
]


def bucket(filename: str, name: str) -> str:
    """The bucket of a profiled function (``other`` when none matches)."""
    where = f"{filename}:{name}"
    for label, needles in BUCKETS:
        if any(n in where for n in needles):
            return label
    return "other (builtins, orjson, ...)"


def shares(profile: cProfile.Profile) -> dict[str, float]:
    """Seconds of own time per bucket."""
    stats = pstats.Stats(profile)
    out: dict[str, float] = defaultdict(float)
    for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        out[bucket(filename, name)] += row[2]
    return dict(out)


def report(title: str, profile: cProfile.Profile, ops: int, top: int) -> None:
    by_bucket = shares(profile)
    by_bucket.pop("idle (epoll)", None)
    total = sum(by_bucket.values())
    print(f"\n== {title}: {total / ops * 1e6:.0f} µs CPU per op under cProfile ({ops} ops)")
    for label, seconds in sorted(by_bucket.items(), key=lambda kv: -kv[1]):
        print(f"  {label:34s} {seconds / total:6.1%}  {seconds / ops * 1e6:7.1f} µs/op")
    if top:
        pstats.Stats(profile).sort_stats("tottime").print_stats(top)


async def _profiled(fn: Callable[[], Awaitable[None]], ops: int) -> cProfile.Profile:
    for _ in range(50):  # warm statement caches and pools
        await fn()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(ops):
        await fn()
    profile.disable()
    return profile


async def main(top: int, ops: int) -> None:
    async with bench_database() as url:
        settings = Settings(  # type: ignore[call-arg]
            database_url=url,
            redis_url=REDIS_URL,
            cache_prefix=f"bench:profile:{uuid.uuid4().hex[:8]}",
            pool_size=5,
            max_overflow=0,
            _env_file=None,
        )
        async with Database(settings) as db:
            async with db.unit_of_work() as uow:
                users = await uow.users.add_many(
                    User(username=f"p{i}", email=f"p{i}@x.io", password_hash="x") for i in range(32)
                )
                await uow.commit()
            ids = [u.id for u in users]

            async def hit() -> None:
                async with db.unit_of_work(read_only=True) as uow:
                    await uow.users.get(ids[0])

            async def one(user_id: int) -> None:
                async with db.unit_of_work(read_only=True) as uow:
                    await uow.users.get(user_id, cached=False)

            async def miss() -> None:
                await one(ids[0])

            async def burst() -> None:
                await asyncio.gather(*(one(i) for i in ids))

            await hit()
            await db.cache.drain()
            report("cache hit", await _profiled(hit, ops), ops, top)
            report("get, cache off", await _profiled(miss, ops), ops, top)
            bursts = max(1, ops // 32)
            report("32 concurrent gets", await _profiled(burst, bursts), bursts * 32, top)
            await db.cache.clear()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--top", type=int, default=0, help="also print the N costliest functions")
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.top, args.ops))
