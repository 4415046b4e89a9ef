"""Metrics time series on real PostgreSQL: COPY ingest, reads, partitions, retention."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from alpha_data import MetricPoint
from alpha_data.cli.metrics import metrics_app
from alpha_data.errors import InvalidDataError, ReadOnlyError
from alpha_data.repositories.metrics import (
    MetricBucket,
    MetricsRepository,
    partition_name,
)
from alpha_data.repositories.metrics import bulk_copy as metrics_module
from alpha_data.services.metrics import (
    drop_metrics_before,
    ensure_metric_partitions,
    insert_portfolio_metrics,
    insert_portfolio_metrics_batch,
)

UTC = timezone.utc
#: Noon today (UTC): inside the partition window the migration created.
NOON = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


def at(day: date, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


async def count_rows(db: Any, name: str | None = None) -> int:
    async with db.unit_of_work() as uow:
        if name is None:
            sql = text("SELECT count(*) FROM alphapulse.metrics")
            return int((await uow.session.execute(sql)).scalar_one())
        sql = text("SELECT count(*) FROM alphapulse.metrics WHERE metric_name = :n")
        return int((await uow.session.execute(sql, {"n": name})).scalar_one())


async def homes(uow: Any, name: str) -> dict[datetime, str]:
    """Which partition each point of ``name`` lives in."""
    sql = text(
        "SELECT time, tableoid::regclass::text AS part FROM alphapulse.metrics "
        "WHERE metric_name = :n ORDER BY time"
    )
    rows = (await uow.session.execute(sql, {"n": name})).all()
    return {row.time: row.part for row in rows}


async def partition_names(uow: Any) -> list[str]:
    return [p.name for p in await uow.metrics.partitions()]


def _dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


async def drop_partitions(database_url: str, names: list[str]) -> None:
    """Drop partitions a real_db test committed (tests must not see each other's days)."""
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        for name in names:
            await conn.execute(f'DROP TABLE IF EXISTS alphapulse."{name}"')
    finally:
        await conn.close()


def days(first: date, count: int) -> list[date]:
    return [first + timedelta(days=n) for n in range(count)]


# -- insert / insert_many round trips ------------------------------------------


async def test_insert_round_trip(db):
    labels = {"portfolio_id": "7", "x'); DROP TABLE alphapulse.metrics; --": "é ✓"}
    when = NOON - timedelta(minutes=5)
    async with db.unit_of_work() as uow:
        point = await uow.metrics.insert("latency_ms", 12.5, labels=labels, time=when)
        await uow.commit()
    assert point == MetricPoint(when, "latency_ms", 12.5, labels)
    assert point.time.tzinfo is not None and point.time.utcoffset() == timedelta(0)
    assert isinstance(point.labels, dict)
    async with db.unit_of_work(read_only=True) as uow:
        got = await uow.metrics.range("latency_ms", when, when + timedelta(seconds=1))
    assert got == [point]


async def test_insert_accepts_other_timezones_and_decimal(db):
    tokyo = timezone(timedelta(hours=9))
    when = NOON.astimezone(tokyo)
    async with db.unit_of_work() as uow:
        point = await uow.metrics.insert("nav", Decimal("101.25"), time=when)
        await uow.commit()
    assert point.time == NOON and point.value == 101.25 and point.labels == {}


async def test_insert_without_time_uses_transaction_now(db):
    async with db.unit_of_work() as uow:
        first = await uow.metrics.insert("ticks", 1)
        second = await uow.metrics.insert("ticks", 2)
        db_now = (await uow.session.execute(text("SELECT now()"))).scalar_one()
        await uow.commit()
    assert first.time == second.time == db_now
    assert abs(first.time - datetime.now(UTC)) < timedelta(minutes=10)


async def test_insert_many_round_trip_and_partition_routing(db):
    day0 = NOON.date()
    points = [
        MetricPoint(at(d, 6), "cpu", float(i), {"host": f"h{i}"})
        for i, d in enumerate(days(day0 - timedelta(days=2), 4))
    ]
    points.append(MetricPoint(at(day0, 0, 0), "cpu", 9.0, {}))  # midnight: today's partition
    async with db.unit_of_work() as uow:
        assert await uow.metrics.insert_many(points) == 5
        await uow.commit()
    async with db.unit_of_work() as uow:
        got = await uow.metrics.range(
            "cpu", at(day0 - timedelta(days=3)), at(day0 + timedelta(days=3)), order="asc"
        )
        where = await homes(uow, "cpu")
    assert got == sorted(points, key=lambda p: p.time)
    assert all(p.time.tzinfo is not None for p in got)
    for p in points:
        assert where[p.time] == f"alphapulse.{partition_name(p.time.date())}"


async def test_insert_many_tuples_none_time_and_none_labels(db):
    async with db.unit_of_work() as uow:
        n = await uow.metrics.insert_many(
            [(None, "queue_depth", 3, None), (NOON, "queue_depth", Decimal("4.5"), {"q": "a"})]
        )
        db_now = (await uow.session.execute(text("SELECT now()"))).scalar_one()
        await uow.commit()
    assert n == 2
    async with db.unit_of_work() as uow:
        got = await uow.metrics.range(
            "queue_depth", NOON - timedelta(days=3), NOON + timedelta(days=3), order="asc"
        )
    assert {(p.time, p.value, tuple(p.labels.items())) for p in got} == {
        (db_now, 3.0, ()),
        (NOON, 4.5, (("q", "a"),)),
    }


async def test_insert_many_empty_input(db):
    async with db.unit_of_work() as uow:
        assert await uow.metrics.insert_many([]) == 0
        assert await uow.metrics.insert_many(iter(())) == 0

        async def nothing() -> AsyncIterator[MetricPoint]:
            return
            yield  # an async generator that yields nothing

        assert await uow.metrics.insert_many(nothing()) == 0
        await uow.metrics.insert("after_empty", 1.0, time=NOON)  # the UoW is still usable


async def test_insert_many_streams_chunks_from_a_generator(db, monkeypatch):
    monkeypatch.setattr(metrics_module, "COPY_CHUNK_SIZE", 10)
    monkeypatch.setattr(metrics_module, "EAGER_MAX", 3)
    produced = 0
    copies: list[int] = []  # records sent by each COPY statement
    ahead: list[int] = []  # points pulled from the input but not yet handed to COPY

    def generate() -> Iterator[MetricPoint]:
        nonlocal produced
        for i in range(95):
            produced += 1
            yield MetricPoint(NOON + timedelta(seconds=i), "stream", float(i), {"i": str(i)})

    async with db.unit_of_work() as uow:
        repo: MetricsRepository = uow.metrics
        copier = repo._copier
        original = copier._copy
        sent = 0

        async def spy(driver: Any, records: Any) -> int:
            def watch() -> Iterator[Any]:
                nonlocal sent
                for record in records:
                    ahead.append(produced - sent)
                    sent += 1
                    yield record

            copied = await original(driver, watch())
            copies.append(copied)
            return copied

        monkeypatch.setattr(copier, "_copy", spy)
        assert await repo.insert_many(generate()) == 95
        await uow.commit()
    assert copies == [10] * 9 + [5]
    # lazily pulled: at most the peeked head (EAGER_MAX + 1) ahead of the COPY stream
    assert max(ahead) <= 4
    assert await count_rows(db, "stream") == 95


async def test_insert_many_accepts_async_iterables(db, monkeypatch):
    monkeypatch.setattr(metrics_module, "COPY_CHUNK_SIZE", 7)
    monkeypatch.setattr(metrics_module, "EAGER_MAX", 3)

    async def generate() -> AsyncIterator[tuple[datetime, str, float, dict[str, str]]]:
        for i in range(30):
            await asyncio.sleep(0)
            yield (NOON + timedelta(seconds=i), "async_feed", float(i), {})

    async with db.unit_of_work() as uow:
        assert await uow.metrics.insert_many(generate()) == 30
        await uow.commit()
    async with db.unit_of_work() as uow:
        got = await uow.metrics.range("async_feed", NOON, NOON + timedelta(minutes=1), order="asc")
    assert [p.value for p in got] == [float(i) for i in range(30)]


# -- atomicity ------------------------------------------------------------------


MODES = pytest.mark.parametrize(
    ("eager_max", "chunk"), [(1000, 100_000), (3, 4)], ids=["validated-first", "streamed"]
)


@MODES
async def test_copy_in_rolled_back_uow_leaves_no_rows(db, monkeypatch, eager_max, chunk):
    monkeypatch.setattr(metrics_module, "COPY_CHUNK_SIZE", chunk)
    monkeypatch.setattr(metrics_module, "EAGER_MAX", eager_max)
    points = [MetricPoint(NOON + timedelta(seconds=i), "rolled", 1.0, {}) for i in range(20)]
    async with db.unit_of_work() as uow:
        assert await uow.metrics.insert_many(points) == 20
        assert len(await uow.metrics.range("rolled", NOON, NOON + timedelta(hours=1))) == 20
    assert await count_rows(db, "rolled") == 0


async def test_copy_as_first_statement_of_a_real_uow_is_transactional(real_db, monkeypatch):
    """COPY runs inside the UoW's transaction even when nothing else ran before it."""
    points = [MetricPoint(NOON + timedelta(seconds=i), "first_stmt", 1.0, {}) for i in range(5)]
    async with real_db.unit_of_work() as uow:
        assert await uow.metrics.insert_many(points) == 5
        # Not visible to another connection before commit ...
        assert await count_rows(real_db, "first_stmt") == 0
    # ... and gone after the block ended without commit.
    assert await count_rows(real_db, "first_stmt") == 0

    monkeypatch.setattr(metrics_module, "COPY_CHUNK_SIZE", 2)
    monkeypatch.setattr(metrics_module, "EAGER_MAX", 3)
    async with real_db.unit_of_work() as uow:
        assert await uow.metrics.insert_many(points) == 5
    assert await count_rows(real_db, "first_stmt") == 0

    # a streamed batch failing half-way leaves the real transaction usable
    bad = [*points[:4], MetricPoint(NOON, "first_stmt", math.inf, {}), *points[4:]]
    async with real_db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError, match="point 4"):
            await uow.metrics.insert_many(bad)
        await uow.metrics.insert_many(points)
        await uow.commit()
    assert await count_rows(real_db, "first_stmt") == 5


@MODES
async def test_insert_many_bad_point_writes_nothing_and_uow_stays_usable(
    db, monkeypatch, eager_max, chunk
):
    monkeypatch.setattr(metrics_module, "COPY_CHUNK_SIZE", chunk)
    monkeypatch.setattr(metrics_module, "EAGER_MAX", eager_max)
    points: list[Any] = [
        MetricPoint(NOON + timedelta(seconds=i), "atomic", 1.0, {}) for i in range(10)
    ]
    points[7] = MetricPoint(NOON, "atomic", math.nan, {})
    async with db.unit_of_work() as uow:
        await uow.metrics.insert("atomic", 0.5, time=NOON - timedelta(hours=1))
        with pytest.raises(InvalidDataError, match="point 7: value must be finite"):
            await uow.metrics.insert_many(points)
        # the earlier insert survives, the whole batch is gone, the UoW still works
        await uow.metrics.insert("atomic", 2.0, time=NOON - timedelta(minutes=1))
        await uow.commit()
    async with db.unit_of_work() as uow:
        got = await uow.metrics.range("atomic", NOON - timedelta(days=1), NOON + timedelta(days=1))
    assert sorted(p.value for p in got) == [0.5, 2.0]


# -- validation -------------------------------------------------------------------

NAIVE = datetime(2026, 1, 1, 12, 0)

BAD_INSERTS: list[tuple[str, dict[str, Any]]] = [
    ("empty name", {"name": ""}),
    ("blank name", {"name": "   "}),
    ("long name", {"name": "x" * 201}),
    ("name not str", {"name": 5}),
    ("name with NUL", {"name": "a\x00b"}),
    ("nan", {"value": math.nan}),
    ("inf", {"value": math.inf}),
    ("-inf", {"value": -math.inf}),
    ("decimal nan", {"value": Decimal("NaN")}),
    ("value str", {"value": "1.0"}),
    ("value bool", {"value": True}),
    ("value None", {"value": None}),
    ("huge int", {"value": 10**400}),
    ("labels nested", {"labels": {"a": {"b": "c"}}}),
    ("labels int value", {"labels": {"a": 1}}),
    ("labels int key", {"labels": {1: "a"}}),
    ("labels list", {"labels": [("a", "b")]}),
    ("labels empty key", {"labels": {"": "x"}}),
    ("labels NUL", {"labels": {"a": "\x00"}}),
    ("labels surrogate", {"labels": {"a": "\udc80"}}),
    ("too many labels", {"labels": {f"k{i}": "v" for i in range(33)}}),
    ("naive time", {"time": NAIVE}),
    ("time not datetime", {"time": "2026-01-01T00:00:00Z"}),
]


@pytest.mark.parametrize("case", BAD_INSERTS, ids=[c[0] for c in BAD_INSERTS])
async def test_bad_insert_rejected_before_sql(db, case):
    kwargs: dict[str, Any] = {"name": "valid_metric", "value": 1.0, "labels": None, "time": NOON}
    kwargs.update(case[1])
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError):
            await uow.metrics.insert(
                kwargs["name"], kwargs["value"], labels=kwargs["labels"], time=kwargs["time"]
            )
        with pytest.raises(InvalidDataError, match="point 1"):
            await uow.metrics.insert_many(
                [
                    (NOON, "valid_metric", 1.0, None),
                    (kwargs["time"], kwargs["name"], kwargs["value"], kwargs["labels"]),
                ]
            )
        await uow.commit()
    assert await count_rows(db) == 0


@pytest.mark.parametrize(
    "points",
    [[(NOON, "m", 1.0)], [NOON], "not points", {"a": 1}, 42],
    ids=["3-tuple", "datetime", "str", "mapping", "int"],
)
async def test_insert_many_rejects_malformed_input(db, points):
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError):
            await uow.metrics.insert_many(points)
    assert await count_rows(db) == 0


async def test_bad_read_arguments_rejected(db):
    later, earlier = NOON, NOON - timedelta(hours=1)
    async with db.unit_of_work(read_only=True) as uow:
        m = uow.metrics
        with pytest.raises(InvalidDataError, match="start must not be after end"):
            await m.range("x", later, earlier)
        with pytest.raises(InvalidDataError, match="timezone-aware"):
            await m.range("x", NAIVE, later)
        with pytest.raises(InvalidDataError, match="order"):
            await m.range("x", earlier, later, order="up")
        for limit in (0, -1, 100_001, True, 1.5):
            with pytest.raises(InvalidDataError, match="limit"):
                await m.range("x", earlier, later, limit=limit)
        with pytest.raises(InvalidDataError):
            await m.range("", earlier, later)
        with pytest.raises(InvalidDataError, match="label filter"):
            await m.range("x", earlier, later, labels={"a": 1})
        with pytest.raises(InvalidDataError, match="agg"):
            await m.buckets("x", earlier, later, timedelta(minutes=1), agg="median")
        for every in (timedelta(0), timedelta(seconds=-1), 60):
            with pytest.raises(InvalidDataError, match="every"):
                await m.buckets("x", earlier, later, every)
        with pytest.raises(InvalidDataError, match="buckets per call"):
            await m.buckets("x", earlier, later, timedelta(microseconds=1))
        with pytest.raises(InvalidDataError, match="start must not be after end"):
            await m.buckets("x", later, earlier, timedelta(minutes=1))
        with pytest.raises(InvalidDataError):
            await m.latest_per_label("x", "")
        with pytest.raises(InvalidDataError, match="timezone-aware"):
            await m.latest_per_label("x", "k", since=NAIVE)
        with pytest.raises(InvalidDataError):
            await m.latest("x" * 201)


async def test_bad_partition_arguments_rejected(db):
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidDataError, match="start must not be after end"):
            await uow.metrics.ensure_partitions(NOON, NOON - timedelta(days=1))
        with pytest.raises(InvalidDataError, match="timezone-aware"):
            await uow.metrics.ensure_partitions(NAIVE, NOON)
        with pytest.raises(InvalidDataError, match="partitions per call"):
            await uow.metrics.ensure_partitions(NOON, NOON + timedelta(days=4000))
        with pytest.raises(InvalidDataError, match="timezone-aware"):
            await uow.metrics.drop_before(NAIVE)
        assert await uow.metrics.ensure_partitions(NOON, NOON) == []


# -- reads ------------------------------------------------------------------------


async def test_range_is_half_open_filtered_ordered_and_limited(db):
    start = NOON - timedelta(hours=1)
    end = NOON
    points = [
        MetricPoint(start - timedelta(microseconds=1), "px", 0.0, {"s": "a"}),  # before
        MetricPoint(start, "px", 1.0, {"s": "a"}),  # included
        MetricPoint(start + timedelta(minutes=10), "px", 2.0, {"s": "b", "v": "1"}),
        MetricPoint(start + timedelta(minutes=20), "px", 3.0, {"s": "a", "v": "1"}),
        MetricPoint(end, "px", 4.0, {"s": "a"}),  # excluded: end is open
        MetricPoint(start + timedelta(minutes=30), "other", 5.0, {"s": "a"}),
    ]
    async with db.unit_of_work() as uow:
        await uow.metrics.insert_many(points)
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        m = uow.metrics
        assert [p.value for p in await m.range("px", start, end)] == [3.0, 2.0, 1.0]
        assert [p.value for p in await m.range("px", start, end, order="asc")] == [1.0, 2.0, 3.0]
        assert [p.value for p in await m.range("px", start, end, limit=2)] == [3.0, 2.0]
        assert [p.value for p in await m.range("px", start, end, labels={"s": "a"})] == [3.0, 1.0]
        assert [p.value for p in await m.range("px", start, end, labels={"v": "1"})] == [3.0, 2.0]
        assert await m.range("px", start, end, labels={"s": "zzz"}) == []
        assert await m.range("px", start, start) == []
        assert await m.range("missing", start, end) == []


async def test_latest_with_labels_and_old_points(db):
    old = datetime(2001, 5, 17, 8, 30, tzinfo=UTC)  # outside every partition: DEFAULT
    async with db.unit_of_work() as uow:
        await uow.metrics.insert_many(
            [
                (NOON - timedelta(hours=2), "temp", 1.0, {"room": "a"}),
                (NOON - timedelta(hours=1), "temp", 2.0, {"room": "b"}),
                (NOON - timedelta(days=3), "temp", 3.0, {"room": "c"}),
                (old, "temp", 4.0, {"room": "d"}),
                (old, "only_old", 5.0, {}),
            ]
        )
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        m = uow.metrics
        assert (await m.latest("temp")) == MetricPoint(
            NOON - timedelta(hours=1), "temp", 2.0, {"room": "b"}
        )
        latest_a = await m.latest("temp", labels={"room": "a"})
        assert latest_a is not None and latest_a.value == 1.0
        latest_c = await m.latest("temp", labels={"room": "c"})
        assert latest_c is not None and latest_c.value == 3.0
        latest_d = await m.latest("temp", labels={"room": "d"})
        assert latest_d is not None and latest_d.time == old
        assert (await m.latest("only_old")) == MetricPoint(old, "only_old", 5.0, {})
        assert await m.latest("temp", labels={"room": "zzz"}) is None
        assert await m.latest("nothing") is None


async def test_latest_per_label_one_query(db):
    points = [
        (NOON - timedelta(hours=3), "portfolio_value", 100.0, {"portfolio_id": "1"}),
        (NOON - timedelta(hours=1), "portfolio_value", 110.0, {"portfolio_id": "1"}),
        (NOON - timedelta(hours=2), "portfolio_value", 200.0, {"portfolio_id": "2", "x": "y"}),
        (NOON - timedelta(days=4), "portfolio_value", 300.0, {"portfolio_id": "3"}),
        (NOON, "portfolio_value", 999.0, {}),  # no portfolio_id: ignored
        (NOON, "other_metric", 1.0, {"portfolio_id": "1"}),
    ]
    async with db.unit_of_work() as uow:
        await uow.metrics.insert_many(points)
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        got = await uow.metrics.latest_per_label("portfolio_value", "portfolio_id")
        recent = await uow.metrics.latest_per_label(
            "portfolio_value", "portfolio_id", since=NOON - timedelta(days=1)
        )
        assert await uow.metrics.latest_per_label("portfolio_value", "absent") == {}
    assert set(got) == {"1", "2", "3"}
    assert got["1"] == MetricPoint(
        NOON - timedelta(hours=1), "portfolio_value", 110.0, {"portfolio_id": "1"}
    )
    assert got["2"].value == 200.0 and got["2"].labels == {"portfolio_id": "2", "x": "y"}
    assert got["3"].value == 300.0
    assert set(recent) == {"1", "2"}


async def test_latest_per_label_is_one_statement(db):
    from tests.support import count_statements

    async with db.unit_of_work() as uow:
        await uow.metrics.insert("pv", 1.0, labels={"p": "1"}, time=NOON)
        with count_statements(db.engine) as counter:
            await uow.metrics.latest_per_label("pv", "p")
        assert counter.count == 1


async def test_buckets_aligned_to_start_every_aggregate(db):
    start = NOON - timedelta(hours=2) + timedelta(minutes=7)  # an odd origin: 10:07
    every = timedelta(minutes=15)
    # bucket 0 [10:07, 10:22): 1, 5, 3 ; bucket 1 empty ; bucket 2 [10:37, 10:52): 10
    values = [
        (start, 1.0),
        (start + timedelta(minutes=5), 5.0),
        (start + timedelta(minutes=14, seconds=59), 3.0),
        (start + timedelta(minutes=31), 10.0),
        (start - timedelta(seconds=1), 100.0),  # before start: excluded
        (start + timedelta(minutes=45), 100.0),  # == end: excluded
    ]
    async with db.unit_of_work() as uow:
        await uow.metrics.insert_many((t, "pnl", v, {"desk": "fx"}) for t, v in values)
        await uow.metrics.insert("pnl", 1000.0, labels={"desk": "eq"}, time=start)
        await uow.commit()
    end = start + timedelta(minutes=45)
    b0, b2 = start, start + 2 * every
    expected = {
        "avg": [(b0, 3.0), (b2, 10.0)],
        "min": [(b0, 1.0), (b2, 10.0)],
        "max": [(b0, 5.0), (b2, 10.0)],
        "sum": [(b0, 9.0), (b2, 10.0)],
        "count": [(b0, 3.0), (b2, 1.0)],
        "first": [(b0, 1.0), (b2, 10.0)],
        "last": [(b0, 3.0), (b2, 10.0)],
    }
    async with db.unit_of_work(read_only=True) as uow:
        for agg, want in expected.items():
            got = await uow.metrics.buckets("pnl", start, end, every, agg, labels={"desk": "fx"})
            assert [(b.time, b.value) for b in got] == want, agg
            assert [b.points for b in got] == [3, 1]
            assert all(isinstance(b, MetricBucket) and b.time.tzinfo for b in got)
        # without the label filter the eq point joins bucket 0
        got = await uow.metrics.buckets("pnl", start, end, every, "sum")
        assert [(b.time, b.value, b.points) for b in got] == [(b0, 1009.0, 4), (b2, 10.0, 1)]
        assert await uow.metrics.buckets("pnl", start, start, every) == []


# -- partitions ---------------------------------------------------------------------


async def test_migration_created_a_window_of_day_partitions(db):
    today = datetime.now(UTC).date()
    async with db.unit_of_work(read_only=True) as uow:
        parts = await uow.metrics.partitions()
        index = (
            await uow.session.execute(
                text(
                    "SELECT count(*) FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indrelid "
                    "WHERE h.inhparent = 'alphapulse.metrics'::regclass"
                )
            )
        ).scalar_one()
    by_name = {p.name: p for p in parts}
    for d in days(today - timedelta(days=7), 38):
        p = by_name[partition_name(d)]
        assert (p.start, p.end) == (at(d, 0), at(d + timedelta(days=1), 0))
    assert index == len(parts) + 1  # every partition and the default carry the index


async def test_point_outside_window_lands_in_default_and_moves(db):
    far = date(2001, 3, 10)
    points = [
        (at(far, 0, 0), "legacy", 1.0, {}),
        (at(far, 23, 59), "legacy", 2.0, {}),
        (at(far + timedelta(days=1), 0, 0), "legacy", 3.0, {}),  # the next day: stays
    ]
    async with db.unit_of_work() as uow:
        await uow.metrics.insert_many(points)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert set((await homes(uow, "legacy")).values()) == {"alphapulse.metrics_default"}
        created = await uow.metrics.ensure_partitions(at(far, 0, 0), at(far, 13))
        assert created == ["metrics_p20010310"]
        # idempotent
        assert await uow.metrics.ensure_partitions(at(far, 1), at(far, 2)) == []
        await uow.commit()
    async with db.unit_of_work() as uow:
        where = await homes(uow, "legacy")
        assert where == {
            at(far, 0, 0): "alphapulse.metrics_p20010310",
            at(far, 23, 59): "alphapulse.metrics_p20010310",
            at(far + timedelta(days=1), 0, 0): "alphapulse.metrics_default",
        }
        assert [p.value for p in await uow.metrics.range("legacy", at(far, 0), at(far, 23))] == [
            1.0
        ]
        # new points for that day are routed to the new partition
        await uow.metrics.insert("legacy", 4.0, time=at(far, 12))
        assert (await homes(uow, "legacy"))[at(far, 12)] == "alphapulse.metrics_p20010310"


async def test_ensure_partitions_covers_half_open_span_in_utc(db):
    plus5 = timezone(timedelta(hours=5))
    # 2001-07-02 03:00+05 is 2001-07-01 22:00 UTC; end exactly at midnight is exclusive
    start = datetime(2001, 7, 2, 3, 0, tzinfo=plus5)
    end = datetime(2001, 7, 4, 0, 0, tzinfo=UTC)
    async with db.unit_of_work() as uow:
        created = await uow.metrics.ensure_partitions(start, end)
        names = await partition_names(uow)
    assert created == ["metrics_p20010701", "metrics_p20010702", "metrics_p20010703"]
    assert "metrics_p20010704" not in names


async def test_maintenance_services_create_and_drop_partitions(db):
    """The daily job's entry points: each runs and commits a unit of work of its own."""
    first = date(2002, 3, 1)
    created = await ensure_metric_partitions(db, at(first, 0), at(first + timedelta(days=3), 0))
    assert created == [partition_name(d) for d in days(first, 3)]
    assert await ensure_metric_partitions(db, at(first, 0), at(first, 23)) == []
    async with db.unit_of_work() as uow:
        await uow.metrics.insert_many([(at(d, 12), "svc", 1.0, {}) for d in days(first, 3)])
        await uow.commit()
    dropped = await drop_metrics_before(db, at(first + timedelta(days=2), 0))
    assert dropped.partitions == tuple(partition_name(d) for d in days(first, 2))
    assert dropped.rows_deleted == 0  # whole days went with their partitions
    assert await count_rows(db, "svc") == 1
    with pytest.raises(InvalidDataError):
        await drop_metrics_before(db, datetime(2002, 1, 1))  # naive: rejected, nothing dropped


async def test_retention_inside_one_transaction(db):
    first = date(2001, 1, 1)
    async with db.unit_of_work() as uow:
        await uow.metrics.ensure_partitions(at(first, 0), at(first + timedelta(days=4), 0))
        await uow.metrics.insert_many(
            [(at(d, 12), "ret", float(i), {}) for i, d in enumerate(days(first, 4))]
            + [
                (at(date(2001, 1, 3), 3), "ret", 10.0, {}),  # edge day, before the cutoff
                (datetime(2000, 6, 1, tzinfo=UTC), "ret", 11.0, {}),  # old, in DEFAULT
            ]
        )
        result = await uow.metrics.drop_before(at(date(2001, 1, 3), 6))
        await uow.commit()
    assert result.partitions == ("metrics_p20010101", "metrics_p20010102")
    assert result.rows_deleted == 2
    async with db.unit_of_work() as uow:
        names = await partition_names(uow)
        left = await uow.metrics.range(
            "ret", datetime(2000, 1, 1, tzinfo=UTC), at(date(2001, 2, 1)), order="asc"
        )
    assert "metrics_p20010101" not in names and "metrics_p20010103" in names
    assert [(p.time, p.value) for p in left] == [
        (at(date(2001, 1, 3), 12), 2.0),
        (at(date(2001, 1, 4), 12), 3.0),
    ]


async def test_retention_with_real_commits(real_db, database_url):
    first = date(2002, 1, 1)
    made = [partition_name(d) for d in days(first, 5)]
    try:
        async with real_db.unit_of_work() as uow:
            assert (
                await uow.metrics.ensure_partitions(at(first, 0), at(first, 0) + timedelta(days=5))
                == made
            )
            await uow.commit()
        async with real_db.unit_of_work() as uow:
            await uow.metrics.insert_many(
                (at(d, h), "ret2", 1.0, {}) for d in days(first, 5) for h in (1, 13)
            )
            await uow.commit()
        async with real_db.unit_of_work() as uow:
            result = await uow.metrics.drop_before(at(first + timedelta(days=3), 12))
            await uow.commit()
        assert result.partitions == tuple(made[:3])
        assert result.rows_deleted == 1  # 2002-01-04 01:00
        async with real_db.unit_of_work(read_only=True) as uow:
            names = await partition_names(uow)
            left = await uow.metrics.range(
                "ret2", at(first, 0), at(first + timedelta(days=9)), order="asc"
            )
        assert not set(made[:3]) & set(names) and set(made[3:]) <= set(names)
        assert [p.time for p in left] == [
            at(first + timedelta(days=3), 13),
            at(first + timedelta(days=4), 1),
            at(first + timedelta(days=4), 13),
        ]
        # running it again drops nothing more
        async with real_db.unit_of_work() as uow:
            again = await uow.metrics.drop_before(at(first + timedelta(days=3), 12))
            await uow.commit()
        assert again == ((), 0)
    finally:
        await drop_partitions(database_url, made)


async def test_ensure_partitions_concurrently(real_db, database_url):
    first = date(2003, 2, 1)
    made = [partition_name(d) for d in days(first, 6)]
    spans = [(0, 3), (1, 4), (2, 6), (0, 6)]
    async with real_db.unit_of_work() as uow:
        await uow.metrics.insert("conc", 1.0, time=at(first + timedelta(days=2), 9))
        await uow.commit()

    async def ensure(lo: int, hi: int) -> list[str]:
        async with real_db.unit_of_work() as uow:
            created = await uow.metrics.ensure_partitions(
                at(first, 0) + timedelta(days=lo), at(first, 0) + timedelta(days=hi)
            )
            await asyncio.sleep(0.05)  # hold the lock a little: the others must wait
            await uow.commit()
        return created

    try:
        results = await asyncio.gather(*(ensure(lo, hi) for lo, hi in spans))
        created = [name for names in results for name in names]
        assert sorted(created) == made  # each day exactly once
        async with real_db.unit_of_work(read_only=True) as uow:
            names = await partition_names(uow)
            where = await homes(uow, "conc")
        assert set(made) <= set(names)
        assert list(where.values()) == [f"alphapulse.{made[2]}"]
    finally:
        await drop_partitions(database_url, made)


# -- read-only ------------------------------------------------------------------------


async def test_read_only_uow_refuses_writes(db):
    async with db.unit_of_work() as uow:
        await uow.metrics.insert("ro", 1.0, time=NOON)
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        m = uow.metrics
        with pytest.raises(ReadOnlyError):
            await m.insert("ro", 2.0, time=NOON)
        with pytest.raises(ReadOnlyError):
            await m.insert_many([(NOON, "ro", 2.0, None)])
        with pytest.raises(ReadOnlyError):
            await m.ensure_partitions(at(date(2001, 1, 1)), at(date(2001, 1, 2)))
        with pytest.raises(ReadOnlyError):
            await m.drop_before(datetime(2001, 1, 1, tzinfo=UTC))
        # reads still work
        latest = await m.latest("ro")
        assert latest is not None and latest.value == 1.0
    assert await count_rows(db, "ro") == 1


# -- services ---------------------------------------------------------------------------


async def test_insert_portfolio_metrics(db):
    point = await insert_portfolio_metrics(db, 42, Decimal("1234.56"), NOON)
    assert point == MetricPoint(NOON, "portfolio_value", 1234.56, {"portfolio_id": "42"})
    now_point = await insert_portfolio_metrics(db, 43, 99.5)
    assert now_point.time.tzinfo is not None
    async with db.unit_of_work(read_only=True) as uow:
        got = await uow.metrics.latest_per_label("portfolio_value", "portfolio_id")
    assert got["42"] == point and got["43"] == now_point


async def test_insert_portfolio_metrics_rejects_bad_input(db):
    with pytest.raises(InvalidDataError):
        await insert_portfolio_metrics(db, 0, 1.0)
    with pytest.raises(InvalidDataError):
        await insert_portfolio_metrics(db, 1, math.inf)
    with pytest.raises(InvalidDataError):
        await insert_portfolio_metrics(db, 1, 1.0, NAIVE)
    assert await count_rows(db) == 0


async def test_insert_portfolio_metrics_batch(db):
    n = await insert_portfolio_metrics_batch(db, {1: Decimal("10.5"), 2: 20.25, 3: 7}, NOON)
    assert n == 3
    async with db.unit_of_work(read_only=True) as uow:
        got = await uow.metrics.latest_per_label("portfolio_value", "portfolio_id")
    assert {k: (p.time, p.value) for k, p in got.items()} == {
        "1": (NOON, 10.5),
        "2": (NOON, 20.25),
        "3": (NOON, 7.0),
    }
    assert await insert_portfolio_metrics_batch(db, {}) == 0
    with pytest.raises(InvalidDataError):
        await insert_portfolio_metrics_batch(db, {4: 1.0, 5: math.nan})
    with pytest.raises(InvalidDataError):
        await insert_portfolio_metrics_batch(db, {-1: 1.0})
    assert await count_rows(db) == 3


# -- CLI -----------------------------------------------------------------------------------


async def test_cli_ensure_partitions(database_url, monkeypatch):
    today = datetime.now(UTC).date()
    # the migration made days up to today+30; ask for 33 ahead so three are new
    made = [partition_name(today + timedelta(days=n)) for n in (31, 32, 33)]
    monkeypatch.setenv("ALPHA_DATA_DATABASE_URL", database_url)
    monkeypatch.setenv("ALPHA_DATA_REDIS_URL", "memory://")
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        # the command runs its own event loop: keep it off the test's loop (thread)
        return runner.invoke(metrics_app, ["ensure-partitions", *args])

    try:
        result = await asyncio.to_thread(invoke, "--ahead", "33")
        assert result.exit_code == 0, result.output
        for name in made:
            assert name in result.output
        assert "3 partitions created" in result.output
        again = await asyncio.to_thread(invoke, "--ahead", "33")
        assert again.exit_code == 0 and "0 partitions created" in again.output
        bad = await asyncio.to_thread(invoke, "--ahead", "-1")
        assert bad.exit_code != 0
    finally:
        await drop_partitions(database_url, made)


async def test_count_by_name_span_and_labels(db):
    base = datetime.now(timezone.utc).replace(microsecond=0)
    async with db.unit_of_work() as uow:
        await uow.metrics.insert_many(
            MetricPoint(base - timedelta(minutes=i), "counted", float(i), {"k": str(i % 2)})
            for i in range(10)
        )
        assert await uow.metrics.count("counted") == 10
        assert await uow.metrics.count("counted", labels={"k": "1"}) == 5
        assert await uow.metrics.count("counted", start=base - timedelta(minutes=3)) == 4
        assert await uow.metrics.count("counted", end=base - timedelta(minutes=8)) == 1
        assert await uow.metrics.count("nothing") == 0
        with pytest.raises(InvalidDataError):
            await uow.metrics.count("counted", start=base, end=base - timedelta(days=1))
