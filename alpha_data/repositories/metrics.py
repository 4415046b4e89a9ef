"""Metric points in ``alphapulse.metrics``: a day-partitioned time series on plain PostgreSQL.

Points are rows, not ORM objects: every read returns :class:`MetricPoint`
NamedTuples with timezone-aware (UTC) times and labels as a ``dict``.

* Writes: :meth:`MetricsRepository.insert` (one row, ``INSERT … RETURNING``) and
  :meth:`MetricsRepository.insert_many` (asyncpg binary ``COPY`` on the unit of
  work's own connection, inside its transaction).
* Reads: ``range`` (``[start, end)``), ``latest``, ``latest_per_label`` (one
  query) and ``buckets`` (``date_bin`` aligned to ``start``).
* Partitions: one per UTC day (``metrics_pYYYYMMDD``) plus ``metrics_default``,
  which catches points outside every day partition. ``ensure_partitions``
  creates days (moving matching rows out of the default partition) and
  ``drop_before`` drops whole days and deletes row-wise only at the edge.

Every argument is validated before SQL (InvalidDataError): metric names are
non-blank and at most :data:`MAX_NAME_LENGTH` characters, values finite, labels
a flat ``str → str`` mapping, and datetimes timezone-aware — naive datetimes are
rejected, never guessed. Values reach PostgreSQL only as bind parameters; the
only identifiers written into SQL text are partition names this module derives
from dates, and they are quoted.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from datetime import time as clock_time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias

import orjson
from sqlalchemy import (
    Column,
    ColumnElement,
    DateTime,
    Interval,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import DOUBLE_PRECISION, JSONB, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from alpha_data.errors import DataLayerError, InvalidDataError, ReadOnlyError, translate
from alpha_data.repositories.handle import SessionBound, SessionHandle
from alpha_data.validation import check_aware, check_finite

if TYPE_CHECKING:
    from alpha_data.cache import Cache

__all__ = [
    "AGGREGATES",
    "MAX_NAME_LENGTH",
    "DroppedMetrics",
    "MetricBucket",
    "MetricPartition",
    "MetricPoint",
    "MetricsRepository",
    "PointInput",
    "partition_name",
]

log = logging.getLogger("alpha_data.metrics")

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)

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

#: pg_advisory_xact_lock key serialising partition maintenance ("alphamtp").
_PARTITION_LOCK_KEY = 0x616C7068616D7470
_COLUMNS = ("time", "metric_name", "value", "labels")
_SAVEPOINT = "alpha_data_metrics_copy"
_EMPTY_LABELS = "{}"
_LABEL_CACHE_SIZE = 10_000
_END = object()

metrics_table = Table(
    TABLE,
    MetaData(schema=SCHEMA),  # not the ORM metadata: this table is managed by hand
    Column("time", DateTime(timezone=True), nullable=False),
    Column("metric_name", Text, nullable=False),
    Column("value", DOUBLE_PRECISION, nullable=False),
    Column("labels", JSONB, nullable=False),
)
_t = metrics_table.c


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


# -- validation ---------------------------------------------------------------


def _check_name(name: Any, what: str = "metric name") -> str:
    if not isinstance(name, str):
        raise InvalidDataError(f"{what} must be a string")
    if not name or name.isspace():
        raise InvalidDataError(f"{what} must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidDataError(f"{what} must be at most {MAX_NAME_LENGTH} characters")
    if not name.isprintable():
        raise InvalidDataError(f"{what} must not contain control characters")
    _check_utf8(name, what)
    return name


def _check_utf8(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidDataError(f"{what} is not valid UTF-8 text") from None


def _check_labels(labels: Any, what: str = "labels") -> dict[str, str]:
    """A flat str → str mapping (copied into a plain dict)."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise InvalidDataError(f"{what} must be a mapping of str to str")
    if len(labels) > MAX_LABELS:
        raise InvalidDataError(f"{what} may hold at most {MAX_LABELS} entries")
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidDataError(f"{what} must map str to str (flat, no nesting)")
        if not key or len(key) > MAX_LABEL_KEY_LENGTH:
            raise InvalidDataError(
                f"{what} keys must be 1 to {MAX_LABEL_KEY_LENGTH} characters long"
            )
        if len(value) > MAX_LABEL_VALUE_LENGTH:
            raise InvalidDataError(
                f"{what} values must be at most {MAX_LABEL_VALUE_LENGTH} characters long"
            )
        if "\x00" in key or "\x00" in value:
            raise InvalidDataError(f"{what} must not contain NUL characters")
        out[key] = value
    return out


def _encode_labels(labels: dict[str, str], what: str = "labels") -> str:
    if not labels:
        return _EMPTY_LABELS
    try:
        return orjson.dumps(labels).decode()
    except orjson.JSONEncodeError:
        raise InvalidDataError(f"{what} are not valid UTF-8 text") from None


def _check_value(value: Any, what: str = "value") -> float:
    if type(value) is float:  # the fast path of bulk ingest
        if math.isfinite(value):
            return value
        raise InvalidDataError(f"{what} must be finite")
    try:
        return check_finite(value, what)
    except OverflowError:
        raise InvalidDataError(f"{what} is too large for double precision") from None


def _check_time(value: Any, what: str) -> datetime:
    return check_aware(value, what)


def _check_span(start: Any, end: Any) -> tuple[datetime, datetime]:
    start = _check_time(start, "start")
    end = _check_time(end, "end")
    if start > end:
        raise InvalidDataError("start must not be after end")
    return start, end


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RANGE_LIMIT:
        raise InvalidDataError(f"limit must be an integer between 1 and {MAX_RANGE_LIMIT}")
    return limit


# -- partitions ---------------------------------------------------------------


def partition_name(day: date) -> str:
    """The name of the day partition holding ``[day 00:00 UTC, next day 00:00 UTC)``."""
    return f"metrics_p{day:%Y%m%d}"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, clock_time.min, tzinfo=UTC)


def _days_covering(start: datetime, end: datetime) -> list[date]:
    """UTC days whose partition intersects ``[start, end)``."""
    if start >= end:
        return []
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _timestamp_literal(moment: datetime) -> str:
    """A timestamptz literal for DDL (partition bounds cannot be bind parameters).

    Only called with day boundaries this module computed from ``date`` objects.
    """
    return "'" + moment.astimezone(UTC).isoformat(sep=" ").replace("'", "''") + "'"


_QUALIFIED_PARENT = f"{_quote_ident(SCHEMA)}.{_quote_ident(TABLE)}"

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


class MetricsRepository(SessionBound):
    """Metric points of one unit of work's transaction (``uow.metrics``).

    Reads and writes run on the unit of work's session; ``insert_many`` streams
    binary COPY through the same connection, so everything commits or rolls
    back with the unit of work. In a read-only unit of work every write
    (insert, COPY, partition DDL, retention) raises ReadOnlyError.
    """

    def __init__(
        self,
        session: SessionHandle | AsyncSession,
        *,
        cache: Cache | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__(session, read_only=read_only)
        # Metric reads are not cached: they are ranges over a moving series.
        self._known_names: set[str] = set()
        self._label_cache: dict[tuple[tuple[str, str], ...], str] = {}

    def __repr__(self) -> str:
        return f"MetricsRepository(read_only={self.read_only})"

    # -- helpers -------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("this unit of work is read-only; open one without read_only=True")

    async def _execute(self, statement: Any, params: Any = None) -> Any:
        try:
            return await self.session.execute(statement, params)
        except DataLayerError:
            raise
        except Exception as exc:
            raise translate(exc) from exc

    async def _query(self, statement: Any, params: Any = None) -> Any:
        """Run a read on the session's connection (Core: no ORM compilation per call)."""
        try:
            conn = await self.session.connection()
            return await conn.execute(statement, params)
        except DataLayerError:
            raise
        except Exception as exc:
            raise translate(exc) from exc

    def _name(self, name: Any) -> str:
        if name.__class__ is str and name in self._known_names:
            return str(name)
        checked = _check_name(name)
        if len(self._known_names) < 10_000:
            self._known_names.add(checked)
        return checked

    @staticmethod
    def _label_filter(labels: Mapping[str, str] | None) -> list[ColumnElement[bool]]:
        checked = _check_labels(labels, "label filter")
        return [_t.labels.contains(checked)] if checked else []

    @staticmethod
    def _point(row: Any) -> MetricPoint:
        # (time, metric_name, value, labels): the driver already gives a float and a new dict
        return MetricPoint._make(row)

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
        name = self._name(name)
        number = _check_value(value)
        checked_labels = _check_labels(labels)
        _encode_labels(checked_labels)  # rejects text PostgreSQL cannot store
        when: Any = func.now() if time is None else _check_time(time, "time")
        stmt = (
            insert(metrics_table)
            .values(time=when, metric_name=name, value=number, labels=checked_labels)
            .returning(*metrics_table.c)
        )
        row = (await self._execute(stmt)).one()
        return self._point(row)

    async def insert_many(self, points: Iterable[PointInput] | AsyncIterable[PointInput]) -> int:
        """Insert many points with asyncpg binary COPY; return how many were written.

        ``points`` is any iterable (or async iterable) of :class:`MetricPoint` or
        ``(time, name, value, labels)`` tuples. The COPY runs on the unit of
        work's own connection inside its transaction: leaving the block without
        commit loses every point. The call is atomic: when any point is invalid
        (InvalidDataError naming its index) or the COPY fails, nothing of this
        call remains and the unit of work stays usable.

        Up to :data:`EAGER_MAX` points are validated before any SQL is sent.
        Larger inputs are streamed, never held whole in memory: each point is
        validated as asyncpg encodes it (so Python work overlaps the server's),
        in COPY statements of at most :data:`COPY_CHUNK_SIZE` points, under a
        SAVEPOINT that is rolled back if anything fails.
        """
        self._check_writable()
        if isinstance(points, AsyncIterable):
            return await self._insert_stream(points.__aiter__(), [])
        if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Iterable):
            raise InvalidDataError("points must be an iterable of (time, name, value, labels)")
        iterator = iter(points)
        head = list(itertools.islice(iterator, EAGER_MAX + 1))
        if len(head) <= EAGER_MAX:
            return await self._insert_small(head)
        return await self._insert_stream(iterator, head)

    async def _insert_small(self, points: list[Any]) -> int:
        """Validate everything, then one COPY (no savepoint needed: nothing can fail half-way)."""
        if not points:
            return 0
        rows = list(self._rows(points, 0, None))
        driver = await self._driver()
        now = None
        if any(row[0] is None for row in rows) or not driver.is_in_transaction():
            now = await self._now()  # also sends the BEGIN the session still owes
            if any(row[0] is None for row in rows):
                rows = [(now, *row[1:]) if row[0] is None else row for row in rows]
        await self._copy(driver, rows)
        return len(rows)

    async def _insert_stream(self, source: Any, head: list[Any]) -> int:
        """COPY chunk after chunk from ``head`` then ``source`` (sync or async), atomically."""
        driver = await self._driver()
        now = await self._now()  # also sends the BEGIN the session still owes
        await self._raw(driver, f"SAVEPOINT {_SAVEPOINT}")
        written = 0
        try:
            is_async = isinstance(source, AsyncIterator)
            if not is_async:
                source = itertools.chain(head, source)
            pending: list[Any] = []  # at most the one point peeked after a full chunk
            while True:
                if is_async:
                    records: Any = self._arows(pending, source, written, now)
                else:
                    chunk = itertools.chain(pending, source)
                    records = self._rows(itertools.islice(chunk, COPY_CHUNK_SIZE), written, now)
                copied = await self._copy(driver, records)
                written += copied
                if copied < COPY_CHUNK_SIZE:
                    break
                # Peek one point so that no empty COPY is sent at the end.
                if is_async:
                    try:
                        pending = [await source.__anext__()]
                    except StopAsyncIteration:
                        break
                else:
                    nxt = next(source, _END)
                    if nxt is _END:
                        break
                    pending = [nxt]
        except BaseException:
            try:
                await self._raw(driver, f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                await self._raw(driver, f"RELEASE SAVEPOINT {_SAVEPOINT}")
            except Exception:  # a dead connection: the transaction is gone anyway
                log.debug("rolling back to the COPY savepoint failed", exc_info=True)
            raise
        await self._raw(driver, f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return written

    async def _arows(
        self, pending: list[Any], source: AsyncIterator[Any], offset: int, now: datetime | None
    ) -> AsyncIterator[tuple[datetime | None, str, float, str]]:
        """Validated COPY records: ``pending``, then points of ``source`` up to one chunk."""
        count = 0
        for row in self._rows(pending, offset, now):
            count += 1
            yield row
        while count < COPY_CHUNK_SIZE:
            try:
                point = await source.__anext__()
            except StopAsyncIteration:
                return
            for row in self._rows((point,), offset + count, now):
                yield row
            count += 1

    def _rows(
        self, points: Iterable[Any], offset: int, now: datetime | None
    ) -> Iterator[tuple[datetime | None, str, float, str]]:
        """Validate points lazily into COPY records ``(time, name, value, labels JSON)``.

        The checks are the ones of :meth:`insert`, with fast paths for the
        common shapes (a float, an aware datetime, a name or label set seen
        before in this unit of work). Errors name the point's index.
        """
        known = self._known_names
        label_cache = self._label_cache
        index = offset
        for point in points:
            try:
                when, name, value, labels = point
            except (TypeError, ValueError):
                raise InvalidDataError(
                    f"point {index}: expected (time, metric_name, value, labels)"
                ) from None
            try:
                if when is None:
                    when = now
                elif (
                    when.__class__ is not datetime
                    or (zone := when.tzinfo) is None
                    or (zone is not UTC and when.utcoffset() is None)
                ):
                    when = _check_time(when, "time")
                if name.__class__ is not str or name not in known:
                    name = self._name(name)
                if value.__class__ is not float or not math.isfinite(value):
                    value = _check_value(value)
                encoded: str | None = _EMPTY_LABELS
                if labels is not None and (labels.__class__ is not dict or labels):
                    try:
                        encoded = label_cache.get(tuple(labels.items()))
                    except (AttributeError, TypeError):  # not a mapping, or unhashable values
                        encoded = None
                    if encoded is None:
                        encoded = self._labels_json(labels)
            except InvalidDataError as exc:
                raise InvalidDataError(f"point {index}: {exc.message}") from None
            yield (when, name, value, encoded or _EMPTY_LABELS)
            index += 1

    def _labels_json(self, labels: Any) -> str:
        """Check ``labels`` and encode them as JSON text, remembering the result."""
        checked = _check_labels(labels)
        encoded = _encode_labels(checked)
        if len(self._label_cache) < _LABEL_CACHE_SIZE:
            self._label_cache[tuple(checked.items())] = encoded
        return encoded

    async def _driver(self) -> Any:
        """The asyncpg connection under the unit of work's session."""
        try:
            conn = await self.session.connection()
            raw = await conn.get_raw_connection()
        except Exception as exc:
            raise translate(exc) from exc
        return raw.driver_connection

    async def _now(self) -> datetime:
        """The transaction's ``now()`` (running it also sends the pending BEGIN)."""
        value: datetime = (await self._execute(select(func.now()))).scalar_one()
        return value

    async def _raw(self, driver: Any, sql: str) -> None:
        try:
            await driver.execute(sql)
        except Exception as exc:
            raise translate(exc) from exc

    async def _copy(self, driver: Any, records: Any) -> int:
        """One binary COPY of ``records`` (a list or a lazy iterable); return rows copied."""
        if not driver.is_in_transaction():
            raise DataLayerError("COPY needs an open transaction; none is active")
        try:
            status = await driver.copy_records_to_table(
                TABLE, schema_name=SCHEMA, columns=_COLUMNS, records=records
            )
        except DataLayerError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        return int(str(status).rsplit(" ", 1)[-1])

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
        ``limit`` points (1 to :data:`MAX_RANGE_LIMIT`); for more, page by time.
        """
        name = self._name(name)
        start, end = _check_span(start, end)
        limit = _check_limit(limit)
        if order not in ("asc", "desc"):
            raise InvalidDataError("order must be 'asc' or 'desc'")
        stmt = (
            select(*metrics_table.c)
            .where(_t.metric_name == name, _t.time >= start, _t.time < end)
            .where(*self._label_filter(labels))
            .order_by(_t.time.desc() if order == "desc" else _t.time.asc())
            .limit(limit)
        )
        return [self._point(row) for row in await self._query(stmt)]

    async def count(
        self,
        name: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> int:
        """How many points ``name`` has (in ``[start, end)`` when given)."""
        name = self._name(name)
        stmt = select(func.count()).select_from(metrics_table).where(_t.metric_name == name)
        if start is not None or end is not None:
            lower, upper = _check_span(start or _EPOCH, end or _FAR_FUTURE)
            stmt = stmt.where(_t.time >= lower, _t.time < upper)
        stmt = stmt.where(*self._label_filter(labels))
        return int((await self._query(stmt)).scalar_one())

    async def latest(
        self, name: str, *, labels: Mapping[str, str] | None = None
    ) -> MetricPoint | None:
        """The newest point of ``name`` (matching ``labels``), or None.

        Looks in the newest day partitions first (from yesterday 00:00 UTC on,
        including future days) and only scans every partition when they hold
        nothing: with day partitions an unbounded probe touches each of them.
        """
        name = self._name(name)
        filters = self._label_filter(labels)
        base = (
            select(*metrics_table.c)
            .where(_t.metric_name == name, *filters)
            .order_by(_t.time.desc())
            .limit(1)
        )
        recent = _day_start(datetime.now(UTC).date()) - LATEST_WINDOW
        row = (await self._query(base.where(_t.time >= recent))).first()
        if row is None:
            row = (await self._query(base.where(_t.time < recent))).first()
        return None if row is None else self._point(row)

    async def latest_per_label(
        self, name: str, label_key: str, *, since: datetime | None = None
    ) -> dict[str, MetricPoint]:
        """The newest point of ``name`` for every value of label ``label_key``, in one query.

        E.g. ``latest_per_label("portfolio_value", "portfolio_id")`` maps each
        portfolio id to its latest valuation. Points without the label are
        ignored. The query reads every point of ``name`` (from ``since`` on, when
        given): pass ``since`` for long histories.
        """
        name = self._name(name)
        key = _check_name(label_key, "label key")
        if len(key) > MAX_LABEL_KEY_LENGTH:
            raise InvalidDataError(f"label key must be at most {MAX_LABEL_KEY_LENGTH} characters")
        label = bindparam("label_key", key, type_=Text)
        label_value = _t.labels.op("->>", return_type=Text)(label)
        conditions = [_t.metric_name == name, _t.labels.has_key(label)]
        if since is not None:
            conditions.append(_t.time >= _check_time(since, "since"))
        ranked = (
            select(
                *metrics_table.c,
                label_value.label("label_value"),
                func.row_number()
                .over(partition_by=label_value, order_by=_t.time.desc())
                .label("rank"),
            )
            .where(*conditions)
            .subquery("ranked")
        )
        stmt = select(ranked.c.time, ranked.c.metric_name, ranked.c.value, ranked.c.labels).where(
            ranked.c.rank == 1
        )
        points = [self._point(row) for row in await self._query(stmt)]
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
        :data:`AGGREGATES`: ``first``/``last`` take the value of the earliest or
        latest point in the bucket, ``count`` returns the count as the value.
        """
        name = self._name(name)
        start, end = _check_span(start, end)
        if not isinstance(every, timedelta) or every <= timedelta(0):
            raise InvalidDataError("every must be a positive timedelta")
        if (end - start) / every > MAX_BUCKETS:
            raise InvalidDataError(f"at most {MAX_BUCKETS} buckets per call; use a larger every")
        if agg not in AGGREGATES:
            raise InvalidDataError(f"agg must be one of {', '.join(AGGREGATES)}")
        origin = bindparam("origin", start, type_=DateTime(timezone=True))
        bucket = func.date_bin(bindparam("every", every, type_=Interval), _t.time, origin)
        points = (
            select(bucket.label("bucket"), _t.time, _t.value)
            .where(_t.metric_name == name, _t.time >= start, _t.time < end)
            .where(*self._label_filter(labels))
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
        stmt = (
            select(points.c.bucket, aggregate.label("value"), func.count().label("points"))
            .group_by(points.c.bucket)
            .order_by(points.c.bucket)
        )
        rows = (await self._query(stmt)).all()
        return [MetricBucket(start_, float(value_), int(n)) for start_, value_, n in rows]

    # -- partitions and retention ---------------------------------------------

    async def partitions(self) -> list[MetricPartition]:
        """The range partitions of ``alphapulse.metrics`` (not the default), oldest first."""
        rows = (await self._query(_PARTITIONS_SQL, {"parent": _QUALIFIED_PARENT})).all()
        return [
            MetricPartition(row.name, row.lower, row.upper)
            for row in rows
            if row.lower is not None and row.upper is not None
        ]

    async def _lock_partitions(self) -> None:
        """Serialise partition maintenance until the transaction ends."""
        await self._execute(
            select(func.pg_advisory_xact_lock(bindparam("key", _PARTITION_LOCK_KEY)))
        )

    async def ensure_partitions(self, start: datetime, end: datetime) -> list[str]:
        """Create the missing day partitions for ``[start, end)``; return the names created.

        Idempotent, and safe to run concurrently (an advisory transaction lock
        serialises callers; run it at the default READ COMMITTED isolation).
        Points already sitting in the default partition for a new day are moved
        into it. The partitions exist once the unit of work commits.
        """
        self._check_writable()
        start, end = _check_span(start, end)
        days = _days_covering(start, end)
        if len(days) > MAX_PARTITIONS_PER_CALL:
            raise InvalidDataError(
                f"at most {MAX_PARTITIONS_PER_CALL} partitions per call; split the span"
            )
        if not days:
            return []
        await self._lock_partitions()
        existing = await self.partitions()
        created: list[str] = []
        for day in days:
            lower, upper = _day_start(day), _day_start(day + timedelta(days=1))
            if any(p.start < upper and lower < p.end for p in existing):
                continue
            await self._create_partition(day, lower, upper)
            created.append(partition_name(day))
        return created

    async def _create_partition(self, day: date, lower: datetime, upper: datetime) -> None:
        """Create, fill from the default partition, and attach one day partition.

        ATTACH (unlike CREATE … PARTITION OF) takes only SHARE UPDATE EXCLUSIVE on
        the parent, so readers and writers of other days carry on; the CHECK
        constraint lets it skip the validation scan and is dropped afterwards.
        """
        name = partition_name(day)
        table = f"{_quote_ident(SCHEMA)}.{_quote_ident(name)}"
        check = _quote_ident(f"{name}_bounds")
        lo, hi = _timestamp_literal(lower), _timestamp_literal(upper)
        await self._ddl(
            f"CREATE TABLE {table} (LIKE {_QUALIFIED_PARENT} INCLUDING DEFAULTS "
            f"INCLUDING CONSTRAINTS INCLUDING STORAGE, "
            f'CONSTRAINT {check} CHECK ("time" >= {lo} AND "time" < {hi}))'
        )
        default = f"{_quote_ident(SCHEMA)}.{_quote_ident(DEFAULT_PARTITION)}"
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

    async def _ddl(self, sql: str) -> None:
        """Run one DDL statement (its only literals are computed day boundaries)."""
        try:
            conn = await self.session.connection()
            await conn.exec_driver_sql(sql)
        except DataLayerError:
            raise
        except Exception as exc:
            raise translate(exc) from exc

    async def drop_before(self, cutoff: datetime) -> DroppedMetrics:
        """Retention: remove every point older than ``cutoff``; return what was removed.

        Partitions that end at or before ``cutoff`` are dropped whole; points
        older than ``cutoff`` in the partition straddling it (and in the default
        partition) are deleted row by row. Dropping takes an ACCESS EXCLUSIVE
        lock on the table until the unit of work ends: commit promptly.
        """
        self._check_writable()
        cutoff = _check_time(cutoff, "cutoff")
        await self._lock_partitions()
        dropped: list[str] = []
        for partition in await self.partitions():
            if partition.end <= cutoff:
                await self._ddl(f"DROP TABLE {_quote_ident(SCHEMA)}.{_quote_ident(partition.name)}")
                dropped.append(partition.name)
        result = await self._execute(metrics_table.delete().where(_t.time < cutoff))
        return DroppedMetrics(tuple(dropped), int(result.rowcount))
