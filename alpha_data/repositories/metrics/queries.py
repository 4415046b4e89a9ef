"""The read statements of metrics: range, count, latest, latest per label, time buckets.

Pure statement builders over :data:`.schema.metrics_table` (arguments already
checked); the repository runs them on its session's connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Interval, Select, Text, bindparam, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from alpha_data.repositories.metrics.schema import Aggregate, Order, metrics_table

__all__ = [
    "buckets_statement",
    "count_statement",
    "label_filter",
    "latest_per_label_statement",
    "latest_statement",
    "range_statement",
]

_t = metrics_table.c


def label_filter(labels: Mapping[str, str]) -> list[ColumnElement[bool]]:
    """Rows whose labels contain every pair of ``labels`` (checked, possibly empty)."""
    return [_t.labels.contains(labels)] if labels else []


def range_statement(
    name: str,
    start: datetime,
    end: datetime,
    labels: Mapping[str, str],
    limit: int,
    order: Order,
) -> Select[Any]:
    """Points of ``name`` in ``[start, end)``, ordered by time, at most ``limit``."""
    return (
        select(*metrics_table.c)
        .where(_t.metric_name == name, _t.time >= start, _t.time < end)
        .where(*label_filter(labels))
        .order_by(_t.time.desc() if order == "desc" else _t.time.asc())
        .limit(limit)
    )


def count_statement(
    name: str, span: tuple[datetime, datetime] | None, labels: Mapping[str, str]
) -> Select[Any]:
    """How many points ``name`` has (within ``span`` when given)."""
    stmt = select(func.count()).select_from(metrics_table).where(_t.metric_name == name)
    if span is not None:
        stmt = stmt.where(_t.time >= span[0], _t.time < span[1])
    return stmt.where(*label_filter(labels))


def latest_statement(name: str, labels: Mapping[str, str]) -> Select[Any]:
    """The newest point of ``name`` (the caller adds a time window)."""
    return (
        select(*metrics_table.c)
        .where(_t.metric_name == name, *label_filter(labels))
        .order_by(_t.time.desc())
        .limit(1)
    )


def latest_per_label_statement(name: str, key: str, since: datetime | None) -> Select[Any]:
    """The newest point of ``name`` per value of label ``key`` (window function, one query)."""
    label = bindparam("label_key", key, type_=Text)
    label_value = _t.labels.op("->>", return_type=Text)(label)
    conditions = [_t.metric_name == name, _t.labels.has_key(label)]
    if since is not None:
        conditions.append(_t.time >= since)
    ranked = (
        select(
            *metrics_table.c,
            label_value.label("label_value"),
            func.row_number().over(partition_by=label_value, order_by=_t.time.desc()).label("rank"),
        )
        .where(*conditions)
        .subquery("ranked")
    )
    return select(ranked.c.time, ranked.c.metric_name, ranked.c.value, ranked.c.labels).where(
        ranked.c.rank == 1
    )


def buckets_statement(
    name: str,
    start: datetime,
    end: datetime,
    every: timedelta,
    agg: Aggregate,
    labels: Mapping[str, str],
) -> Select[Any]:
    """``(bucket start, aggregate, points)`` per non-empty bucket, ``date_bin`` from ``start``."""
    origin = bindparam("origin", start, type_=DateTime(timezone=True))
    bucket = func.date_bin(bindparam("every", every, type_=Interval), _t.time, origin)
    points = (
        select(bucket.label("bucket"), _t.time, _t.value)
        .where(_t.metric_name == name, _t.time >= start, _t.time < end)
        .where(*label_filter(labels))
        .subquery("points")
    )
    value = points.c.value
    aggregate: ColumnElement[Any] = {
        "avg": func.avg(value),
        "min": func.min(value),
        "max": func.max(value),
        "sum": func.sum(value),
        "count": func.count(),
        "first": func.array_agg(aggregate_order_by(value, points.c.time.asc()))[1],
        "last": func.array_agg(aggregate_order_by(value, points.c.time.desc()))[1],
    }[agg]
    return (
        select(points.c.bucket, aggregate.label("value"), func.count().label("points"))
        .group_by(points.c.bucket)
        .order_by(points.c.bucket)
    )
