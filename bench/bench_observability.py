"""Cost of observability on the get-by-id path: metrics on vs off, in one process.

Two Databases on the same database and settings run interleaved (bench.harness
``compare``): one as shipped (statement hooks, pool counters, unit-of-work
counts), one with ``set_metrics_enabled(db, False)`` (no listeners, no
counting). Logging is at INFO on a real handler (writing to /dev/null), so the
per-unit-of-work DEBUG line is skipped the way it is in production; tracing is
off. Goal: metrics cost at most 5% (ratio <= 1.05).

Report-only rows: the same with a cache hit (memory backend, no SQL: the
per-unit-of-work cost is most visible there) and, when the ``otel`` extra is
installed, tracing on (spans recorded into a no-op exporter) vs off.

    python -m bench.bench_observability [--quick]
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from alpha_data import Database, Settings
from alpha_data.models import User
from alpha_data.observability import set_metrics_enabled
from bench.harness import Op, Result, compare

__all__ = ["run"]


@contextmanager
def _logging_at_info() -> Iterator[None]:
    """alpha_data.* at INFO on a handler that really formats and writes (to /dev/null)."""
    logger = logging.getLogger("alpha_data")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.handlers = [handler]
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]
        sink.close()


@asynccontextmanager
async def _databases(settings: Settings) -> AsyncIterator[tuple[Database, Database]]:
    on, off = Database(settings), Database(settings)
    set_metrics_enabled(off, False)
    try:
        await on.connect()
        await off.connect()
        yield on, off
    finally:
        await on.close()
        await off.close()


async def _seed(db: Database) -> int:
    async with db.unit_of_work() as uow:
        users = await uow.users.add_many(
            User(username=f"obs{i}", email=f"obs{i}@x.io", password_hash="x") for i in range(500)
        )
        await uow.commit()
    return users[len(users) // 2].id


async def _both_ways(name: str, on: Op, off: Op, *, baseline_name: str, **kw: Any) -> Result:
    """``compare`` run twice with the roles swapped, medians averaged.

    On a shared machine the side timed first in the pair picks up a small
    systematic bias (an off-vs-off control shows about 1-2%); swapping and
    averaging cancels it.
    """
    first = await compare(name, on, off, baseline_name=baseline_name, **kw)
    second = await compare(name, off, on, baseline_name=baseline_name, **kw)
    ours = (first.ours_median_ms + second.baseline_median_ms) / 2
    base = (first.baseline_median_ms + second.ours_median_ms) / 2
    ratio = ours / base if base else float("inf")
    limit = kw.get("limit")
    return Result(
        name=name,
        baseline=baseline_name,
        ours_median_ms=ours,
        ours_p95_ms=max(first.ours_p95_ms, second.baseline_p95_ms),
        baseline_median_ms=base,
        baseline_p95_ms=max(first.baseline_p95_ms, second.ours_p95_ms),
        ratio=ratio,
        goal=str(kw.get("goal", "")),
        met=None if limit is None else ratio <= limit,
        note=f"ratios {first.ratio:.3f} (on timed first) and {1 / second.ratio:.3f} (off first)",
    )


def _getter(db: Database, user_id: int) -> Any:
    async def get() -> None:
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.users.get(user_id) is not None

    return get


async def run(url: str, *, quick: bool) -> list[Result]:
    """Metrics-on vs metrics-off rows for the database at ``url`` (seeded here)."""
    # One call per side per round, alternating: load on a shared machine drifts on a
    # scale of milliseconds, so fine interleaving lets it hit both sides alike.
    kw: dict[str, Any] = {"rounds": 600 if quick else 4000, "per_round": 1, "warmup": 50}
    base = {"database_url": url, "_env_file": None}
    results: list[Result] = []
    with _logging_at_info():
        async with _databases(Settings(**base, cache_enabled=False)) as (on, off):
            user_id = await _seed(on)
            results.append(
                await _both_ways(
                    "get by id, cache off: logging INFO + metrics on, tracing off",
                    _getter(on, user_id),
                    _getter(off, user_id),
                    baseline_name="same Database with metrics off",
                    goal="<= 1.05x",
                    limit=1.05,
                    **kw,
                )
            )
            results.append(
                await _control(
                    settings_off=Settings(**base, cache_enabled=False), user_id=user_id, kw=kw
                )
            )
            results.extend(await _traced(on, off, user_id, kw))

        cached = Settings(**base, cache_enabled=True, redis_url="memory://")
        async with _databases(cached) as (on, off):
            for db in (on, off):  # fill each Database's own in-process cache
                await _getter(db, user_id)()
                await db.cache.drain()
            results.append(
                await _both_ways(
                    "get by id, cache hit (memory): metrics on",
                    _getter(on, user_id),
                    _getter(off, user_id),
                    baseline_name="same Database with metrics off",
                    goal="report",
                    limit=None,
                    **kw,
                )
            )
            assert on.stats().cache.hits > 0 and on.stats().statements.count > 0
    return results


async def _control(*, settings_off: Settings, user_id: int, kw: dict[str, Any]) -> Result:
    """Off vs off: the noise floor of this machine for the rows above."""
    async with _databases(settings_off) as (one, other):
        set_metrics_enabled(one, False)
        return await _both_ways(
            "control: get by id, metrics off vs metrics off",
            _getter(one, user_id),
            _getter(other, user_id),
            baseline_name="another Database with metrics off",
            goal="report",
            limit=None,
            **kw,
        )


async def _traced(on: Database, off: Database, user_id: int, kw: dict[str, Any]) -> list[Result]:
    """Tracing on (spans exported to nowhere) vs off; skipped without the otel extra."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        from alpha_data.integrations.otel import instrument
    except ImportError:
        return []
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = instrument(on, tracer_provider=provider)
    set_metrics_enabled(off, True)

    async def get_and_forget() -> None:
        await _getter(on, user_id)()
        exporter.clear()

    try:
        return [
            await compare(
                "get by id, cache off: tracing on (in-memory exporter)",
                get_and_forget,
                _getter(off, user_id),
                baseline_name="same Database with tracing off",
                goal="report",
                limit=None,
                **kw,
            )
        ]
    finally:
        tracing.uninstrument()
        set_metrics_enabled(off, False)


async def _main(quick: bool) -> None:
    from rich.console import Console

    from bench.run import print_table
    from bench.setup import bench_database

    async with bench_database() as url:
        results = await run(url, quick=quick)
    print_table(results, Console())


if __name__ == "__main__":
    asyncio.run(_main("--quick" in sys.argv[1:]))
