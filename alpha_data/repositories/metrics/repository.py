"""``uow.metrics``: metric points of one unit of work's transaction.

Reads run as Core statements on the session's connection and return
:class:`MetricPoint` / :class:`MetricBucket` NamedTuples; ``insert_many``
streams binary COPY through the same connection (:mod:`.bulk_copy`), so
everything commits or rolls back with the unit of work.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert
from sqlalchemy.ext.asyncio import AsyncSession

from alpha_data.errors import InvalidDataError, ReadOnlyError, translating
from alpha_data.repositories.handle import SessionBound, SessionHandle
from alpha_data.repositories.metrics import queries
from alpha_data.repositories.metrics.bulk_copy import MetricCopier
from alpha_data.repositories.metrics.checks import (
    RememberedChecks,
    check_label_key,
    check_labels,
    check_limit,
    check_span,
    check_value,
    encode_labels,
)
from alpha_data.repositories.metrics.partitions import MetricPartitions, day_start
from alpha_data.repositories.metrics.schema import (
    AGGREGATES,
    LATEST_WINDOW,
    MAX_BUCKETS,
    UTC,
    Aggregate,
    DroppedMetrics,
    MetricBucket,
    MetricPartition,
    MetricPoint,
    Order,
    PointInput,
    metrics_table,
)
from alpha_data.validation import check_aware

if TYPE_CHECKING:
    from alpha_data.cache import Cache

__all__ = ["MetricsRepository"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
_t = metrics_table.c


class MetricsRepository(SessionBound):
    """Metric points of one unit of work's transaction (``uow.metrics``).

    In a read-only unit of work every write (insert, COPY, partition DDL,
    retention) raises ReadOnlyError. Metric reads are not cached: they are
    ranges over a moving series.
    """

    def __init__(
        self,
        session: SessionHandle | AsyncSession,
        *,
        cache: Cache | None = None,
        read_only: bool = False,
    ) -> None:
        # ``cache`` is accepted like every repository's and ignored: metric
        # reads are ranges over a moving series, never cached.
        super().__init__(session, read_only=read_only)
        self._checks = RememberedChecks()
        self._copier = MetricCopier(self, self._checks)

    def __repr__(self) -> str:
        return f"MetricsRepository(read_only={self.read_only})"

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("this unit of work is read-only; open one without read_only=True")

    async def _query(self, statement: Any) -> Any:
        """Run a read on the session's connection (Core: no ORM compilation per call)."""
        with translating():
            conn = await self.session.connection()
            return await conn.execute(statement)

    # -- writes --------------------------------------------------------------

    async def insert(
        self,
        name: str,
        value: float | int | Decimal,
        *,
        labels: Mapping[str, str] | None = None,
        time: datetime | None = None,
    ) -> MetricPoint:
        """Insert one point and return it as stored.

        ``time=None`` uses the transaction's ``now()``; otherwise ``time`` must be
        timezone-aware. Many points: use :meth:`insert_many` (one COPY).
        """
        self._check_writable()
        name = self._checks.name(name)
        number = check_value(value)
        checked_labels = check_labels(labels)
        encode_labels(checked_labels)  # rejects text PostgreSQL cannot store
        when: Any = func.now() if time is None else check_aware(time, "time")
        stmt = (
            insert(metrics_table)
            .values(time=when, metric_name=name, value=number, labels=checked_labels)
            .returning(*metrics_table.c)
        )
        with translating():
            row = (await self.session.execute(stmt)).one()
        return MetricPoint._make(row)

    async def insert_many(self, points: Iterable[PointInput] | AsyncIterable[PointInput]) -> int:
        """Insert many points with asyncpg binary COPY; return how many were written.

        ``points`` is any iterable (or async iterable) of :class:`MetricPoint` or
        ``(time, name, value, labels)`` tuples. The COPY runs on the unit of
        work's own connection inside its transaction: leaving the block without
        commit loses every point. The call is atomic: when any point is invalid
        (InvalidDataError naming its index) or the COPY fails, nothing of this
        call remains and the unit of work stays usable. Up to ``EAGER_MAX``
        points are validated before any SQL is sent; larger inputs are streamed
        in COPY statements of at most ``COPY_CHUNK_SIZE`` points.
        """
        self._check_writable()
        return await self._copier.insert_many(points)

    # -- reads ---------------------------------------------------------------

    async def range(
        self,
        name: str,
        start: datetime,
        end: datetime,
        *,
        labels: Mapping[str, str] | None = None,
        limit: int = 1000,
        order: Order = "desc",
    ) -> list[MetricPoint]:
        """Points of ``name`` with ``start <= time < end``, newest first unless ``order="asc"``.

        ``labels`` keeps points whose labels contain every given pair. At most
        ``limit`` points (1 to ``MAX_RANGE_LIMIT``); for more, page by time.
        """
        name = self._checks.name(name)
        start, end = check_span(start, end)
        limit = check_limit(limit)
        if order not in ("asc", "desc"):
            raise InvalidDataError("order must be 'asc' or 'desc'")
        filters = check_labels(labels, "label filter")
        stmt = queries.range_statement(name, start, end, filters, limit, order)
        return [MetricPoint._make(row) for row in await self._query(stmt)]

    async def count(
        self,
        name: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> int:
        """How many points ``name`` has (in ``[start, end)`` when given)."""
        name = self._checks.name(name)
        span = None
        if start is not None or end is not None:
            span = check_span(start or _EPOCH, end or _FAR_FUTURE)
        stmt = queries.count_statement(name, span, check_labels(labels, "label filter"))
        return int((await self._query(stmt)).scalar_one())

    async def latest(
        self, name: str, *, labels: Mapping[str, str] | None = None
    ) -> MetricPoint | None:
        """The newest point of ``name`` (matching ``labels``), or None.

        Looks in the newest day partitions first (from yesterday 00:00 UTC on,
        including future days) and only scans every partition when they hold
        nothing: with day partitions an unbounded probe touches each of them.
        """
        name = self._checks.name(name)
        base = queries.latest_statement(name, check_labels(labels, "label filter"))
        recent = day_start(datetime.now(UTC).date()) - LATEST_WINDOW
        row = (await self._query(base.where(_t.time >= recent))).first()
        if row is None:
            row = (await self._query(base.where(_t.time < recent))).first()
        return None if row is None else MetricPoint._make(row)

    async def latest_per_label(
        self, name: str, label_key: str, *, since: datetime | None = None
    ) -> dict[str, MetricPoint]:
        """The newest point of ``name`` for every value of label ``label_key``, in one query.

        E.g. ``latest_per_label("portfolio_value", "portfolio_id")`` maps each
        portfolio id to its latest valuation. Points without the label are
        ignored. The query reads every point of ``name`` (from ``since`` on, when
        given): pass ``since`` for long histories.
        """
        name = self._checks.name(name)
        key = check_label_key(label_key)
        since = None if since is None else check_aware(since, "since")
        stmt = queries.latest_per_label_statement(name, key, since)
        points = [MetricPoint._make(row) for row in await self._query(stmt)]
        return {point.labels[key]: point for point in points}

    async def buckets(
        self,
        name: str,
        start: datetime,
        end: datetime,
        every: timedelta,
        agg: Aggregate = "avg",
        labels: Mapping[str, str] | None = None,
    ) -> list[MetricBucket]:
        """Aggregate ``name`` over ``[start, end)`` in buckets of ``every``, oldest first.

        Buckets start at ``start + k * every`` (``date_bin`` with origin
        ``start``); only buckets holding points are returned. ``agg`` is one of
        ``AGGREGATES``: ``first``/``last`` take the value of the earliest or
        latest point in the bucket, ``count`` returns the count as the value.
        """
        name = self._checks.name(name)
        start, end = check_span(start, end)
        if not isinstance(every, timedelta) or every <= timedelta(0):
            raise InvalidDataError("every must be a positive timedelta")
        if (end - start) / every > MAX_BUCKETS:
            raise InvalidDataError(f"at most {MAX_BUCKETS} buckets per call; use a larger every")
        if agg not in AGGREGATES:
            raise InvalidDataError(f"agg must be one of {', '.join(AGGREGATES)}")
        filters = check_labels(labels, "label filter")
        stmt = queries.buckets_statement(name, start, end, every, agg, filters)
        rows = (await self._query(stmt)).all()
        return [MetricBucket(start_, float(value_), int(n)) for start_, value_, n in rows]

    # -- partitions: maintenance lives in .partitions / services.metrics -----

    async def partitions(self) -> list[MetricPartition]:
        """The range partitions of ``alphapulse.metrics`` (not the default), oldest first."""
        return await MetricPartitions(self.session).all()

    async def ensure_partitions(self, start: datetime, end: datetime) -> list[str]:
        """Create the missing day partitions for ``[start, end)`` in this unit of work.

        Kept for callers of the first release; a maintenance job calls
        ``alpha_data.services.metrics.ensure_metric_partitions`` (or the CLI).
        """
        self._check_writable()
        return await MetricPartitions(self.session).ensure(start, end)

    async def drop_before(self, cutoff: datetime) -> DroppedMetrics:
        """Retention in this unit of work (see ``MetricPartitions.drop_before``).

        Kept for callers of the first release; a maintenance job calls
        ``alpha_data.services.metrics.drop_metrics_before``.
        """
        self._check_writable()
        return await MetricPartitions(self.session).drop_before(cutoff)
