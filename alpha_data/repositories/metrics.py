"""Time-series metric points in ``alphapulse.metrics`` (rows, not ORM objects).

Placeholder shell: the metrics issue fills in COPY ingest, range, latest,
buckets and retention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from datetime import datetime

    from alpha_data.cache import Cache

__all__ = ["MetricPoint", "MetricsRepository"]


class MetricPoint(NamedTuple):
    """One point of a series."""

    time: datetime
    metric_name: str
    value: float
    labels: dict[str, str]


class MetricsRepository:
    """Metric points of one unit of work's transaction."""

    def __init__(
        self, session: AsyncSession, *, cache: Cache | None = None, read_only: bool = False
    ) -> None:
        self.session = session
        self.read_only = read_only

    def __repr__(self) -> str:
        return "MetricsRepository()"

    def _unused(self) -> Any:  # pragma: no cover
        return None
