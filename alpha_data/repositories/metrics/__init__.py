"""Metric points in ``alphapulse.metrics``: a day-partitioned time series on plain PostgreSQL.

Points are rows, not ORM objects: every read returns :class:`MetricPoint`
NamedTuples with timezone-aware (UTC) times and labels as a ``dict``. The
package holds one idea per module:

* :mod:`.schema`: the Core table, the row types and the limits;
* :mod:`.checks`: argument checks (InvalidDataError before SQL) on top of
  :mod:`alpha_data.validation`;
* :mod:`.bulk_copy`: ``insert_many`` as asyncpg binary COPY, atomic and streamed;
* :mod:`.queries`: the read statements (range, latest, per label, buckets);
* :mod:`.partitions`: day partitions and retention, a maintenance job reached
  from ``alpha-data metrics`` and :mod:`alpha_data.services.metrics`;
* :mod:`.repository`: ``uow.metrics``, the per-transaction repository.

Values reach PostgreSQL only as bind parameters; the only identifiers written
into SQL text are partition names derived from dates, quoted.
"""

from __future__ import annotations

from alpha_data.repositories.metrics.partitions import MetricPartitions, partition_name
from alpha_data.repositories.metrics.repository import MetricsRepository
from alpha_data.repositories.metrics.schema import (
    AGGREGATES,
    COPY_CHUNK_SIZE,
    DEFAULT_PARTITION,
    EAGER_MAX,
    MAX_BUCKETS,
    MAX_LABEL_KEY_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
    MAX_LABELS,
    MAX_NAME_LENGTH,
    MAX_PARTITIONS_PER_CALL,
    MAX_RANGE_LIMIT,
    SCHEMA,
    TABLE,
    Aggregate,
    DroppedMetrics,
    MetricBucket,
    MetricPartition,
    MetricPoint,
    Order,
    PointInput,
    metrics_table,
)

__all__ = [
    "AGGREGATES",
    "COPY_CHUNK_SIZE",
    "DEFAULT_PARTITION",
    "EAGER_MAX",
    "MAX_BUCKETS",
    "MAX_LABELS",
    "MAX_LABEL_KEY_LENGTH",
    "MAX_LABEL_VALUE_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PARTITIONS_PER_CALL",
    "MAX_RANGE_LIMIT",
    "SCHEMA",
    "TABLE",
    "Aggregate",
    "DroppedMetrics",
    "MetricBucket",
    "MetricPartition",
    "MetricPartitions",
    "MetricPoint",
    "MetricsRepository",
    "Order",
    "PointInput",
    "metrics_table",
    "partition_name",
]
