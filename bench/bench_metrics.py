"""Benchmarks of the metrics time series against raw asyncpg, on a database of its own.

``await run(db_url, quick=False)`` creates ``alpha_bench_metrics_<random>`` on the
server of ``db_url`` (never touching any other database), migrates it with the
project's Alembic revisions, measures, and drops it. Each result is a dict
``{"name", "ours_median_ms", "baseline_median_ms", "ratio", "goal"}`` where
``ratio = ours / baseline`` (time: lower is better) and ``goal`` states the
target (``report`` when there is none).

* ``ingest_100k``: ``uow.metrics.insert_many`` of MetricPoints (dict labels,
  validated and JSON-encoded inside the timing) vs raw asyncpg
  ``copy_records_to_table`` of ready-made tuples (labels already JSON), in
  interleaved rounds on an emptied table. Goal: throughput >= 0.8x raw.
* ``ingest_vs_executemany``: the same ingest vs SQLAlchemy Core executemany
  (report only; fewer points, it is slow).
* ``range_1day_1m_vs_10k``: ``uow.metrics.range`` for one metric and one day (the
  same 500 points) when the table holds 1M points vs 10k. Goal: <= 1.5x.
* ``range_1day_vs_raw`` and ``buckets_month_vs_raw``: ours vs the same SQL as
  an asyncpg prepared statement on an open connection (report; the raw range
  also JSON-decodes labels into dicts, as ours returns them).

Quick mode (about 7 s) keeps the 100k ingest but runs 3 rounds instead of 7,
compares executemany on 2k points and ``range`` at 100k vs 2k rows.
Run it standalone: ``python bench/bench_metrics.py [--quick] [--url URL]``.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # standalone run from a checkout
    sys.path.insert(0, str(ROOT))

from alpha_data import Database, MetricPoint, Settings  # noqa: E402
from alpha_data.repositories.metrics import metrics_table  # noqa: E402

UTC = timezone.utc
COLUMNS = ["time", "metric_name", "value", "labels"]

Result = dict[str, Any]


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _result(name: str, ours: list[float], base: list[float], goal: str) -> Result:
    o, b = statistics.median(ours), statistics.median(base)
    return {
        "name": name,
        "ours_median_ms": round(o, 3),
        "baseline_median_ms": round(b, 3),
        "ratio": round(o / b, 3) if b else float("inf"),
        "goal": goal,
    }


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await fn()
    return (time.perf_counter() - started) * 1000


def _noon_today() -> datetime:
    return datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


def _points(n: int, start: datetime, seed: int = 7) -> list[MetricPoint]:
    """``n`` points over 20 metrics and 50 portfolios, one millisecond apart."""
    rnd = random.Random(seed)
    names = [f"metric_{i}" for i in range(20)]
    labels = [{"portfolio_id": str(p), "desk": f"d{p % 5}"} for p in range(50)]
    return [
        MetricPoint(
            start + timedelta(milliseconds=i),
            names[i % 20],
            rnd.random() * 100,
            dict(labels[i % 50]),
        )
        for i in range(n)
    ]


def _records(points: list[MetricPoint]) -> list[tuple[datetime, str, float, str]]:
    return [(p.time, p.metric_name, p.value, json.dumps(p.labels)) for p in points]


async def _truncate(raw: asyncpg.Connection) -> None:
    await raw.execute("TRUNCATE alphapulse.metrics")


async def _bench_ingest(db: Database, raw: asyncpg.Connection, quick: bool) -> list[Result]:
    n = 100_000  # the goal is stated for 100k; quick mode runs fewer rounds
    rounds = 3 if quick else 7
    start = _noon_today() - timedelta(hours=6)
    points = _points(n, start)
    records = _records(points)

    async def ours() -> None:
        async with db.unit_of_work() as uow:
            await uow.metrics.insert_many(points)
            await uow.commit()

    async def baseline() -> None:
        async with raw.transaction():
            await raw.copy_records_to_table(
                "metrics", schema_name="alphapulse", columns=COLUMNS, records=records
            )

    ours_ms: list[float] = []
    base_ms: list[float] = []
    await ours()  # warm-up: pools, prepared statements, codecs
    await baseline()
    for i in range(rounds):
        order = [(ours, ours_ms), (baseline, base_ms)]
        for fn, sink in order if i % 2 == 0 else reversed(order):
            await _truncate(raw)
            sink.append(await _timed(fn))
    results = [
        _result(
            f"ingest_{n // 1000}k insert_many vs raw copy_records_to_table",
            ours_ms,
            base_ms,
            "ratio <= 1.25 (throughput >= 0.8x raw COPY)",
        )
    ]

    m = 2_000 if quick else 20_000
    subset = points[:m]
    rows = [p._asdict() for p in subset]

    async def ours_small() -> None:
        async with db.unit_of_work() as uow:
            await uow.metrics.insert_many(subset)
            await uow.commit()

    async def executemany() -> None:
        async with db.unit_of_work() as uow:
            await uow.session.execute(insert(metrics_table), rows)
            await uow.commit()

    ours_ms, base_ms = [], []
    await executemany()
    for i in range(2 if quick else 3):
        order = [(ours_small, ours_ms), (executemany, base_ms)]
        for fn, sink in order if i % 2 == 0 else reversed(order):
            await _truncate(raw)
            sink.append(await _timed(fn))
    results.append(
        _result(
            f"ingest_{m // 1000}k insert_many vs SQLAlchemy executemany",
            ours_ms,
            base_ms,
            "report",
        )
    )
    await _truncate(raw)
    return results


async def _load_filler(raw: asyncpg.Connection, n: int, seed: int) -> None:
    """``n`` points spread over the migrated window (today-7 .. today+29), 20 metrics."""
    rnd = random.Random(seed)
    first = _noon_today().replace(hour=0) - timedelta(days=7)
    span = 36 * 86400.0
    batch: list[tuple[datetime, str, float, str]] = []
    for i in range(n):
        when = first + timedelta(seconds=rnd.random() * span)
        batch.append((when, f"metric_{i % 20}", rnd.random(), '{"portfolio_id": "1"}'))
        if len(batch) == 50_000:
            await raw.copy_records_to_table(
                "metrics", schema_name="alphapulse", columns=COLUMNS, records=batch
            )
            batch = []
    if batch:
        await raw.copy_records_to_table(
            "metrics", schema_name="alphapulse", columns=COLUMNS, records=batch
        )
    await raw.execute("ANALYZE alphapulse.metrics")


async def _bench_reads(db: Database, raw: asyncpg.Connection, quick: bool) -> list[Result]:
    small, large = (2_000, 100_000) if quick else (10_000, 1_000_000)
    reps = 15 if quick else 50
    day = _noon_today().replace(hour=0) - timedelta(days=2)
    target = "target_metric"
    # the same 500 points of the target metric on the target day in both phases
    fixed = [
        (day + timedelta(seconds=172.8 * i), target, float(i), '{"portfolio_id": "1"}')
        for i in range(500)
    ]

    async def ours_range() -> None:
        async with db.unit_of_work(read_only=True) as uow:
            got = await uow.metrics.range(target, day, day + timedelta(days=1), limit=1000)
        assert len(got) == 500

    async def sample(fn: Callable[[], Awaitable[None]]) -> list[float]:
        for _ in range(3):
            await fn()
        return [await _timed(fn) for _ in range(reps)]

    await _truncate(raw)
    await raw.copy_records_to_table(
        "metrics", schema_name="alphapulse", columns=COLUMNS, records=fixed
    )
    await _load_filler(raw, small - len(fixed), seed=1)
    at_small = await sample(ours_range)
    await _load_filler(raw, large - small, seed=2)
    at_large = await sample(ours_range)
    results = [
        _result(
            f"range_1day {large // 1000}k vs {small // 1000}k rows in table",
            at_large,
            at_small,
            "ratio <= 1.5",
        )
    ]

    range_sql = await raw.prepare(
        "SELECT time, metric_name, value, labels FROM alphapulse.metrics "
        "WHERE metric_name = $1 AND time >= $2 AND time < $3 ORDER BY time DESC LIMIT 1000"
    )

    async def raw_range() -> None:
        rows = await range_sql.fetch(target, day, day + timedelta(days=1))
        # the same output as ours: labels as dicts (json.loads, as SQLAlchemy decodes them)
        points = [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]
        assert len(points) == 500

    ours_ms, base_ms = [], []
    for _ in range(3):
        await ours_range()
        await raw_range()
    for _ in range(reps):
        ours_ms.append(await _timed(ours_range))
        base_ms.append(await _timed(raw_range))
    results.append(_result("range_1day ours vs raw asyncpg", ours_ms, base_ms, "report"))

    month_start = _noon_today().replace(hour=0) - timedelta(days=7)
    month_end = month_start + timedelta(days=30)
    every = timedelta(hours=1)
    bucket_sql = await raw.prepare(
        "SELECT date_bin($4, time, $2) AS bucket, avg(value), count(*) "
        "FROM alphapulse.metrics WHERE metric_name = $1 AND time >= $2 AND time < $3 "
        "GROUP BY 1 ORDER BY 1"
    )

    async def ours_buckets() -> None:
        async with db.unit_of_work(read_only=True) as uow:
            await uow.metrics.buckets("metric_3", month_start, month_end, every, "avg")

    async def raw_buckets() -> None:
        await bucket_sql.fetch("metric_3", month_start, month_end, every)

    ours_ms, base_ms = [], []
    for _ in range(2):
        await ours_buckets()
        await raw_buckets()
    for _ in range(max(5, reps // 5)):
        ours_ms.append(await _timed(ours_buckets))
        base_ms.append(await _timed(raw_buckets))
    results.append(
        _result(
            f"buckets 1h over 30 days ({large // 1000}k rows) ours vs raw asyncpg",
            ours_ms,
            base_ms,
            "report",
        )
    )
    return results


async def run(url: str, *, quick: bool) -> list[dict[str, Any]]:
    """Run every metrics benchmark on the (already migrated) database at ``url``."""
    settings = Settings(  # type: ignore[call-arg]
        database_url=url, redis_url="memory://", statement_timeout=120, _env_file=None
    )
    db = Database(settings)
    raw = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        await db.connect()
        results = await _bench_ingest(db, raw, quick)
        results += await _bench_reads(db, raw, quick)
    finally:
        await raw.close()
        await db.close()
    return results
