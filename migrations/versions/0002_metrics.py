"""Metrics time series: ``alphapulse.metrics`` partitioned by day, with a DEFAULT partition.

Hand-written (the ``alphapulse`` schema is outside autogenerate, see env.py).

* ``alphapulse.metrics(time, metric_name, value, labels)`` PARTITION BY RANGE
  (time), one partition per UTC day named ``metrics_pYYYYMMDD``, holding
  ``[day 00:00+00, next day 00:00+00)``; ``metrics_default`` catches
  everything else so that no point is ever rejected.
* ``ix_metrics_metric_name_time`` on ``(metric_name, time DESC)`` is created on
  the parent, so every partition (present and future) gets its own copy.
  No GIN index on ``labels``: every query filters on metric_name and time
  first; a GIN index doubled COPY time in measurement (docs/metrics.md).
* Partitions for a window around the day the migration runs (``DAYS_BEHIND``
  before today to ``DAYS_AHEAD`` after, UTC). ``alpha-data metrics
  ensure-partitions`` and ``uow.metrics.ensure_partitions`` create the rest.

The partition names and bounds below are computed from dates, never from
input. Downgrade drops the table (with every partition, including those made
later) and the schema when nothing else lives in it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone

from alembic import op

from alpha_data.migration_safety import refuse_data_loss

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAYS_BEHIND = 7
DAYS_AHEAD = 30

CREATE_PARENT = """
CREATE TABLE alphapulse.metrics (
    "time"      timestamptz      NOT NULL,
    metric_name text             NOT NULL,
    value       double precision NOT NULL,
    labels      jsonb            NOT NULL DEFAULT '{}'::jsonb
) PARTITION BY RANGE ("time")
"""


def _bound(day: date) -> str:
    return f"'{day.isoformat()} 00:00:00+00'"


def _day_partition(day: date) -> str:
    nxt = day + timedelta(days=1)
    return (
        f'CREATE TABLE alphapulse."metrics_p{day:%Y%m%d}" PARTITION OF alphapulse.metrics '
        f"FOR VALUES FROM ({_bound(day)}) TO ({_bound(nxt)})"
    )


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS alphapulse")
    op.execute(CREATE_PARENT)
    op.execute("CREATE TABLE alphapulse.metrics_default PARTITION OF alphapulse.metrics DEFAULT")
    today = datetime.now(timezone.utc).date()
    for offset in range(-DAYS_BEHIND, DAYS_AHEAD + 1):
        op.execute(_day_partition(today + timedelta(days=offset)))
    op.execute(
        'CREATE INDEX ix_metrics_metric_name_time ON alphapulse.metrics (metric_name, "time" DESC)'
    )


def downgrade() -> None:
    refuse_data_loss("alphapulse.metrics")  # -x allow_data_loss=true to drop rows
    # Dropping the parent drops every partition and the partitioned index.
    op.execute("DROP TABLE alphapulse.metrics")
    # RESTRICT: the schema stays when objects this revision did not create live in it.
    op.execute(
        """
        DO $$
        BEGIN
            DROP SCHEMA IF EXISTS alphapulse RESTRICT;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'schema alphapulse kept: it holds objects of other origin';
        END
        $$
        """
    )
