"""Metric use cases: portfolio values as ``portfolio_value`` points; partition maintenance."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from alpha_data.errors import InvalidDataError
from alpha_data.repositories.base import check_id
from alpha_data.repositories.metrics import (
    DroppedMetrics,
    MetricPartitions,
    MetricPoint,
    PointInput,
)
from alpha_data.validation import check_aware, check_finite

if TYPE_CHECKING:
    from alpha_data.database import Database

__all__ = [
    "PORTFOLIO_VALUE",
    "drop_metrics_before",
    "ensure_metric_partitions",
    "insert_portfolio_metrics",
    "insert_portfolio_metrics_batch",
]

#: The metric every portfolio valuation is written to (label ``portfolio_id``).
PORTFOLIO_VALUE = "portfolio_value"


async def insert_portfolio_metrics(
    db: Database,
    portfolio_id: int,
    portfolio_value: Decimal | float,
    timestamp: datetime | None = None,
) -> MetricPoint:
    """Record one valuation of a portfolio and commit; return the stored point.

    Written as metric ``portfolio_value`` with label ``portfolio_id=str(portfolio_id)``.
    ``timestamp`` must be timezone-aware; ``None`` means the transaction's ``now()``.
    The value is stored as double precision (a Decimal is converted to float).
    """
    check_id(portfolio_id, "portfolio_id")
    value = check_finite(portfolio_value, "portfolio_value")
    if timestamp is not None:
        check_aware(timestamp, "timestamp")
    async with db.unit_of_work() as uow:
        point = await uow.metrics.insert(
            PORTFOLIO_VALUE, value, labels={"portfolio_id": str(portfolio_id)}, time=timestamp
        )
        await uow.commit()
    return point


async def insert_portfolio_metrics_batch(
    db: Database,
    values: Mapping[int, Decimal | float],
    timestamp: datetime | None = None,
) -> int:
    """Record one valuation for each portfolio in ``values`` with one COPY; return the count.

    All points share ``timestamp`` (``None``: the transaction's ``now()``). Every
    id and value is checked before anything is written; the batch commits whole
    or not at all.
    """
    if not isinstance(values, Mapping):
        raise InvalidDataError("values must be a mapping of portfolio id to value")
    if timestamp is not None:
        check_aware(timestamp, "timestamp")
    points: list[PointInput] = [
        (
            timestamp,  # None: the transaction's now(), the same for every point
            PORTFOLIO_VALUE,
            check_finite(value, f"value of portfolio {portfolio_id}"),
            {"portfolio_id": str(check_id(portfolio_id, "portfolio_id"))},
        )
        for portfolio_id, value in values.items()
    ]
    if not points:
        return 0
    async with db.unit_of_work() as uow:
        count = await uow.metrics.insert_many(points)
        await uow.commit()
    return count


async def ensure_metric_partitions(db: Database, start: datetime, end: datetime) -> list[str]:
    """Create the missing day partitions for ``[start, end)`` and commit; return new names.

    The daily maintenance job (``alpha-data metrics ensure-partitions`` runs it):
    idempotent, safe to run concurrently, in a unit of work of its own.
    """
    async with db.unit_of_work() as uow:
        created = await MetricPartitions(uow.session).ensure(start, end)
        await uow.commit()
    return created


async def drop_metrics_before(db: Database, cutoff: datetime) -> DroppedMetrics:
    """Retention: remove every point older than ``cutoff`` and commit; return what went.

    Whole day partitions are dropped, rows at the edge deleted; the table is
    locked ACCESS EXCLUSIVE only for this short unit of work.
    """
    async with db.unit_of_work() as uow:
        dropped = await MetricPartitions(uow.session).drop_before(cutoff)
        await uow.commit()
    return dropped
