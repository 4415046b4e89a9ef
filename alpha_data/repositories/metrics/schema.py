"""The ``alphapulse.metrics`` table, its row types and the limits every metric call obeys.

The table is a hand-managed Core ``Table`` (not on the ORM metadata: its
partitions are created by migrations and maintenance, never by autogenerate).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Literal, NamedTuple, TypeAlias

from sqlalchemy import Column, DateTime, MetaData, Table, Text
from sqlalchemy.dialects.postgresql import DOUBLE_PRECISION, JSONB

__all__ = [
    "AGGREGATES",
    "COPY_CHUNK_SIZE",
    "DEFAULT_PARTITION",
    "EAGER_MAX",
    "LATEST_WINDOW",
    "MAX_BUCKETS",
    "MAX_LABELS",
    "MAX_LABEL_KEY_LENGTH",
    "MAX_LABEL_VALUE_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PARTITIONS_PER_CALL",
    "MAX_RANGE_LIMIT",
    "SCHEMA",
    "TABLE",
    "UTC",
    "Aggregate",
    "DroppedMetrics",
    "MetricBucket",
    "MetricPartition",
    "MetricPoint",
    "Order",
    "PointInput",
    "metrics_table",
]

UTC = timezone.utc

SCHEMA = "alphapulse"
TABLE = "metrics"
#: The partition that catches points outside every day partition.
DEFAULT_PARTITION = "metrics_default"

#: Longest metric name accepted.
MAX_NAME_LENGTH = 200
#: Most labels on one point, and the longest label key and value.
MAX_LABELS = 32
MAX_LABEL_KEY_LENGTH = 100
MAX_LABEL_VALUE_LENGTH = 500
#: Largest ``limit`` that ``range`` accepts.
MAX_RANGE_LIMIT = 100_000
#: Most buckets one ``buckets`` call may span ((end - start) / every).
MAX_BUCKETS = 100_000
#: Most day partitions one ``ensure_partitions`` call may create (ten years).
MAX_PARTITIONS_PER_CALL = 3660
#: ``insert_many`` validates inputs up to this size whole before sending anything.
EAGER_MAX = 1_000
#: Most points sent in one COPY statement by ``insert_many`` (bounds its duration).
COPY_CHUNK_SIZE = 100_000
#: How far back ``latest`` looks first (the newest day partitions) before
#: falling back to the whole table.
LATEST_WINDOW = timedelta(days=1)

#: Aggregates ``buckets`` understands.
AGGREGATES = ("avg", "min", "max", "sum", "count", "first", "last")
Aggregate = Literal["avg", "min", "max", "sum", "count", "first", "last"]
Order = Literal["asc", "desc"]

metrics_table = Table(
    TABLE,
    MetaData(schema=SCHEMA),  # not the ORM metadata: this table is managed by hand
    Column("time", DateTime(timezone=True), nullable=False),
    Column("metric_name", Text, nullable=False),
    Column("value", DOUBLE_PRECISION, nullable=False),
    Column("labels", JSONB, nullable=False),
)


class MetricPoint(NamedTuple):
    """One point of a series: a UTC-aware time, the metric, its value and its labels."""

    time: datetime
    metric_name: str
    value: float
    labels: dict[str, str]


class MetricBucket(NamedTuple):
    """One ``buckets`` row: the bucket's start, the aggregate and how many points it holds."""

    time: datetime
    value: float
    points: int


class MetricPartition(NamedTuple):
    """A range partition of ``alphapulse.metrics``: ``[start, end)``."""

    name: str
    start: datetime
    end: datetime


class DroppedMetrics(NamedTuple):
    """What ``drop_before`` removed: whole partitions, and rows deleted at the edge."""

    partitions: tuple[str, ...]
    rows_deleted: int


#: What ``insert_many`` accepts: a MetricPoint or any ``(time, name, value, labels)``
#: tuple; ``time=None`` means the transaction's ``now()``, ``labels=None`` means none.
PointInput: TypeAlias = tuple[datetime | None, str, float | int | Decimal, Mapping[str, str] | None]
