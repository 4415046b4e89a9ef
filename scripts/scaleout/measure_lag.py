"""Measure streaming-replication lag on a throwaway primary + hot standby (docs/scaling.md).

    .venv/bin/python scripts/scaleout/measure_lag.py [commits]

Starts its own primary and replica on free loopback ports (as the tests do),
then reports, over ``commits`` single-row commits:

* visibility lag: from COMMIT returning on the primary until the row is
  visible on the replica (polling the replica as fast as it answers);
* fence clear: with alpha_data's Router, from the commit until reads are
  routed to the replica again (the read-your-writes window);
* the same visibility lag with 8 concurrent writers.
Everything it started is stopped at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alpha_data import Database, Settings
from tests.scaleout.components import Components, start_primary, start_replica


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return (
        f"{name:<34} n={len(ms):<5} p50={pick(0.5):7.3f} ms  p90={pick(0.9):7.3f} ms  "
        f"p99={pick(0.99):7.3f} ms  max={ms[-1]:7.3f} ms  mean={statistics.fmean(ms):7.3f} ms"
    )


async def visibility(primary_dsn: str, replica_dsn: str, commits: int, writer: int) -> list[float]:
    writer_conn = await asyncpg.connect(primary_dsn)
    reader = await asyncpg.connect(replica_dsn)
    lags = []
    try:
        for i in range(commits):
            key = writer * 1_000_000 + i
            await writer_conn.execute("INSERT INTO lag_probe VALUES ($1)", key)
            committed = time.perf_counter()
            while not await reader.fetchval(
                "SELECT EXISTS (SELECT 1 FROM lag_probe WHERE id = $1)", key
            ):
                pass
            lags.append(time.perf_counter() - committed)
    finally:
        await writer_conn.close()
        await reader.close()
    return lags


async def fence_clear(primary_url: str, replica_url: str, commits: int) -> list[float]:
    settings = Settings(
        database_url=primary_url,
        replica_urls=[replica_url],
        redis_url="memory://",
        _env_file=None,  # type: ignore[call-arg]
    )
    windows = []
    async with Database(settings) as db:
        router = db.router
        assert router is not None
        for i in range(commits):
            async with db.unit_of_work() as uow:
                await uow.session.execute(
                    __import__("sqlalchemy").text("INSERT INTO lag_probe VALUES (:id)"),
                    {"id": 10_000_000 + i},
                )
                await uow.commit()
            committed = time.perf_counter()
            while router.choose() is None:  # noqa: ASYNC110 - measuring, as fast as it changes
                await asyncio.sleep(0)
            windows.append(time.perf_counter() - committed)
    return windows


async def main(commits: int) -> None:
    env = Components()
    try:
        primary = start_primary(env)
        conn = await asyncpg.connect(primary.dsn())
        await conn.execute("CREATE TABLE lag_probe (id bigint PRIMARY KEY)")
        await conn.close()
        replica = start_replica(env, primary)
        p, r = primary.dsn(), replica.dsn()
        print(f"primary :{primary.port} -> hot standby :{replica.port}, {commits} commits")
        print(summary("visibility lag (1 writer)", await visibility(p, r, commits, 1)))
        print(
            summary(
                "fence clear (Router, 1 writer)",
                await fence_clear(primary.url(), replica.url(), commits),
            )
        )
        results = await asyncio.gather(*(visibility(p, r, commits // 8, w) for w in range(2, 10)))
        print(summary("visibility lag (8 writers)", [x for lags in results for x in lags]))
    finally:
        env.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
