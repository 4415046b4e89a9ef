"""Day partitions of ``alphapulse.metrics``: list, create ahead, drop for retention.

One partition per UTC day (``metrics_pYYYYMMDD``) plus ``metrics_default``,
which catches points outside every day partition. Maintenance is a scheduled
job (``alpha-data metrics ensure-partitions``, the services in
:mod:`alpha_data.services.metrics`), run in a unit of work of its own; an
advisory transaction lock serialises concurrent callers.

The only identifiers written into SQL text are partition names derived from
dates, quoted; bounds of ``FOR VALUES`` cannot be bind parameters, so they are
literals of day boundaries computed here from ``date`` objects.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

from sqlalchemy import DateTime, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from alpha_data.errors import InvalidDataError, translating
from alpha_data.repositories.metrics.checks import check_span
from alpha_data.repositories.metrics.schema import (
    DEFAULT_PARTITION,
    MAX_PARTITIONS_PER_CALL,
    SCHEMA,
    TABLE,
    UTC,
    DroppedMetrics,
    MetricPartition,
    metrics_table,
)
from alpha_data.validation import check_aware

__all__ = ["MetricPartitions", "day_start", "days_covering", "partition_name"]

#: pg_advisory_xact_lock key serialising partition maintenance ("alphamtp").
_PARTITION_LOCK_KEY = 0x616C7068616D7470


def partition_name(day: date) -> str:
    """The name of the day partition holding ``[day 00:00 UTC, next day 00:00 UTC)``."""
    return f"metrics_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    """00:00 UTC of ``day``."""
    return datetime.combine(day, clock_time.min, tzinfo=UTC)


def days_covering(start: datetime, end: datetime) -> list[date]:
    """UTC days whose partition intersects ``[start, end)``."""
    if start >= end:
        return []
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(name: str) -> str:
    return f"{_quote_ident(SCHEMA)}.{_quote_ident(name)}"


def _timestamp_literal(moment: datetime) -> str:
    """A timestamptz literal for DDL (only called with day boundaries computed here)."""
    return "'" + moment.astimezone(UTC).isoformat(sep=" ").replace("'", "''") + "'"


_QUALIFIED_PARENT = _qualified(TABLE)

_PARTITIONS_SQL = text(
    r"""
    SELECT c.relname AS name,
           (regexp_match(b.bound, 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS lower,
           (regexp_match(b.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound) b
    WHERE i.inhparent = to_regclass(:parent)
      AND b.bound <> 'DEFAULT'
    ORDER BY 2
    """
)


class MetricPartitions:
    """Partition listing and maintenance on one session (its transaction holds the lock)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _execute(self, statement: Any, params: Any = None) -> Any:
        with translating():
            return await self.session.execute(statement, params)

    async def _ddl(self, sql: str) -> None:
        """Run one DDL statement (its only literals are computed day boundaries)."""
        with translating():
            conn = await self.session.connection()
            await conn.exec_driver_sql(sql)

    async def all(self) -> list[MetricPartition]:
        """The range partitions (not the default), oldest first."""
        with translating():
            conn = await self.session.connection()
            rows = (await conn.execute(_PARTITIONS_SQL, {"parent": _QUALIFIED_PARENT})).all()
        return [
            MetricPartition(row.name, row.lower, row.upper)
            for row in rows
            if row.lower is not None and row.upper is not None
        ]

    async def _lock(self) -> None:
        """Serialise partition maintenance until the transaction ends."""
        await self._execute(
            select(func.pg_advisory_xact_lock(bindparam("key", _PARTITION_LOCK_KEY)))
        )

    async def ensure(self, start: datetime, end: datetime) -> list[str]:
        """Create the missing day partitions for ``[start, end)``; return the names created.

        Idempotent and safe to run concurrently (at READ COMMITTED). Points
        already in the default partition for a new day are moved into it.
        """
        start, end = check_span(start, end)
        days = days_covering(start, end)
        if len(days) > MAX_PARTITIONS_PER_CALL:
            raise InvalidDataError(
                f"at most {MAX_PARTITIONS_PER_CALL} partitions per call; split the span"
            )
        if not days:
            return []
        await self._lock()
        existing = await self.all()
        created: list[str] = []
        for day in days:
            lower, upper = day_start(day), day_start(day + timedelta(days=1))
            if any(p.start < upper and lower < p.end for p in existing):
                continue
            await self._create(day, lower, upper)
            created.append(partition_name(day))
        return created

    async def _create(self, day: date, lower: datetime, upper: datetime) -> None:
        """Create, fill from the default partition, and attach one day partition.

        ATTACH (unlike CREATE … PARTITION OF) takes only SHARE UPDATE EXCLUSIVE on
        the parent, so readers and writers of other days carry on; the CHECK
        constraint lets it skip the validation scan and is dropped afterwards.
        """
        name = partition_name(day)
        table = _qualified(name)
        check = _quote_ident(f"{name}_bounds")
        lo, hi = _timestamp_literal(lower), _timestamp_literal(upper)
        await self._ddl(
            f"CREATE TABLE {table} (LIKE {_QUALIFIED_PARENT} INCLUDING DEFAULTS "
            f"INCLUDING CONSTRAINTS INCLUDING STORAGE, "
            f'CONSTRAINT {check} CHECK ("time" >= {lo} AND "time" < {hi}))'
        )
        default = _qualified(DEFAULT_PARTITION)
        # Identifiers are this module's quoted names; the bounds are bind parameters.
        move = text(
            f'WITH moved AS (DELETE FROM {default} WHERE "time" >= :lower AND "time" < :upper'  # noqa: S608
            ' RETURNING "time", metric_name, value, labels)'
            f' INSERT INTO {table} ("time", metric_name, value, labels)'
            ' SELECT "time", metric_name, value, labels FROM moved'
        ).bindparams(
            bindparam("lower", lower, type_=DateTime(timezone=True)),
            bindparam("upper", upper, type_=DateTime(timezone=True)),
        )
        await self._execute(move)
        await self._ddl(
            f"ALTER TABLE {_QUALIFIED_PARENT} ATTACH PARTITION {table} "
            f"FOR VALUES FROM ({lo}) TO ({hi})"
        )
        await self._ddl(f"ALTER TABLE {table} DROP CONSTRAINT {check}")

    async def drop_before(self, cutoff: datetime) -> DroppedMetrics:
        """Retention: remove every point older than ``cutoff``; return what was removed.

        Partitions that end at or before ``cutoff`` are dropped whole; older
        points in the partition straddling it (and in the default partition) are
        deleted row by row. Dropping takes an ACCESS EXCLUSIVE lock on the table
        until the transaction ends: commit promptly.
        """
        cutoff = check_aware(cutoff, "cutoff")
        await self._lock()
        dropped: list[str] = []
        for partition in await self.all():
            if partition.end <= cutoff:
                await self._ddl(f"DROP TABLE {_qualified(partition.name)}")
                dropped.append(partition.name)
        result = await self._execute(metrics_table.delete().where(metrics_table.c.time < cutoff))
        return DroppedMetrics(tuple(dropped), int(result.rowcount))
