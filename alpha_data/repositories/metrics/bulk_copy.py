"""``insert_many``: metric points streamed into ``alphapulse.metrics`` with binary COPY.

The COPY runs on the unit of work's own asyncpg connection, inside its
transaction. Small inputs are validated whole before anything is sent; larger
ones (sync or async iterables) are validated lazily while asyncpg encodes
them, in COPY statements of at most ``COPY_CHUNK_SIZE`` points, under a
SAVEPOINT rolled back if anything fails: a call is atomic either way.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from alpha_data.errors import DataLayerError, InvalidDataError, translating
from alpha_data.repositories.metrics.checks import RememberedChecks, check_value
from alpha_data.repositories.metrics.schema import (
    COPY_CHUNK_SIZE,
    EAGER_MAX,
    SCHEMA,
    TABLE,
    UTC,
    PointInput,
)
from alpha_data.validation import check_aware

__all__ = ["MetricCopier", "Record"]

log = logging.getLogger("alpha_data.metrics")

#: One COPY record: (time, metric_name, value, labels as JSON text).
Record = tuple[datetime | None, str, float, str]

_COLUMNS = ("time", "metric_name", "value", "labels")
_SAVEPOINT = "alpha_data_metrics_copy"
_END = object()


class HasSession(Protocol):
    """What the copier writes through: a repository's current session."""

    @property
    def session(self) -> AsyncSession: ...


class MetricCopier:
    """Binary COPY of metric points on one unit of work's session."""

    def __init__(self, owner: HasSession, checks: RememberedChecks) -> None:
        self._owner = owner
        self.checks = checks

    @property
    def session(self) -> AsyncSession:
        """The owning repository's session (refused once its unit of work ended)."""
        return self._owner.session

    async def insert_many(self, points: Iterable[PointInput] | AsyncIterable[PointInput]) -> int:
        """Insert ``points`` atomically; return how many were written (see the module doc)."""
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
        rows = list(self.rows(points, 0, None))
        driver = await self._driver()
        needs_now = any(row[0] is None for row in rows)
        if needs_now or not driver.is_in_transaction():
            now = await self._now()  # also sends the BEGIN the session still owes
            if needs_now:
                rows = [(now, *row[1:]) if row[0] is None else row for row in rows]
        await self._copy(driver, rows)
        return len(rows)

    async def _insert_stream(self, source: Any, head: list[Any]) -> int:
        """COPY chunk after chunk from ``head`` then ``source`` (sync or async), atomically."""
        driver = await self._driver()
        now = await self._now()  # also sends the BEGIN the session still owes
        await self._raw(driver, f"SAVEPOINT {_SAVEPOINT}")
        try:
            written = await self._copy_chunks(driver, source, head, now)
        except BaseException:
            try:
                await self._raw(driver, f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                await self._raw(driver, f"RELEASE SAVEPOINT {_SAVEPOINT}")
            except Exception:  # a dead connection: the transaction is gone anyway
                log.debug("rolling back to the COPY savepoint failed", exc_info=True)
            raise
        await self._raw(driver, f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return written

    async def _copy_chunks(self, driver: Any, source: Any, head: list[Any], now: datetime) -> int:
        """One COPY per chunk until ``source`` runs dry; return the points written."""
        written = 0
        is_async = isinstance(source, AsyncIterator)
        if not is_async:
            source = itertools.chain(head, source)
        pending: list[Any] = []  # at most the one point peeked after a full chunk
        while True:
            if is_async:
                records: Any = self._arows(pending, source, written, now)
            else:
                chunk = itertools.chain(pending, source)
                records = self.rows(itertools.islice(chunk, COPY_CHUNK_SIZE), written, now)
            copied = await self._copy(driver, records)
            written += copied
            if copied < COPY_CHUNK_SIZE:
                return written
            # Peek one point so that no empty COPY is sent at the end.
            nxt = await _next_point(source, is_async)
            if nxt is _END:
                return written
            pending = [nxt]

    async def _arows(
        self, pending: list[Any], source: AsyncIterator[Any], offset: int, now: datetime | None
    ) -> AsyncIterator[Record]:
        """Validated COPY records: ``pending``, then points of ``source`` up to one chunk."""
        count = 0
        for row in self.rows(pending, offset, now):
            count += 1
            yield row
        while count < COPY_CHUNK_SIZE:
            try:
                point = await source.__anext__()
            except StopAsyncIteration:
                return
            for row in self.rows((point,), offset + count, now):
                yield row
            count += 1

    def rows(self, points: Iterable[Any], offset: int, now: datetime | None) -> Iterator[Record]:
        """Validate points lazily into COPY records; errors name the point's index.

        The checks are the ones of ``insert``, with fast paths for the common
        shapes (a float, an aware datetime, a name or label set seen before).
        """
        index = offset
        for point in points:
            try:
                when, name, value, labels = point
            except (TypeError, ValueError):
                raise InvalidDataError(
                    f"point {index}: expected (time, metric_name, value, labels)"
                ) from None
            try:
                yield self._record(when, name, value, labels, now)
            except InvalidDataError as exc:
                raise InvalidDataError(f"point {index}: {exc.message}") from None
            index += 1

    def _record(
        self, when: Any, name: Any, value: Any, labels: Any, now: datetime | None
    ) -> Record:
        if when is None:
            when = now
        elif (
            when.__class__ is not datetime
            or (zone := when.tzinfo) is None
            or (zone is not UTC and when.utcoffset() is None)
        ):
            when = check_aware(when, "time")
        if name.__class__ is not str or name not in self.checks.names:
            name = self.checks.name(name)
        if value.__class__ is not float or not math.isfinite(value):
            value = check_value(value)
        return (when, name, value, self.checks.labels_json(labels))

    async def _driver(self) -> Any:
        """The asyncpg connection under the unit of work's session."""
        with translating():
            conn = await self.session.connection()
            raw = await conn.get_raw_connection()
        return raw.driver_connection

    async def _now(self) -> datetime:
        """The transaction's ``now()`` (running it also sends the pending BEGIN)."""
        with translating():
            value: datetime = (await self.session.execute(select(func.now()))).scalar_one()
        return value

    async def _raw(self, driver: Any, sql: str) -> None:
        with translating():
            await driver.execute(sql)

    async def _copy(self, driver: Any, records: Any) -> int:
        """One binary COPY of ``records`` (a list or a lazy iterable); return rows copied."""
        if not driver.is_in_transaction():
            raise DataLayerError("COPY needs an open transaction; none is active")
        with translating():
            status = await driver.copy_records_to_table(
                TABLE, schema_name=SCHEMA, columns=_COLUMNS, records=records
            )
        return int(str(status).rsplit(" ", 1)[-1])


async def _next_point(source: Any, is_async: bool) -> Any:
    """The next point of ``source``, or ``_END``."""
    if not is_async:
        return next(source, _END)
    try:
        return await source.__anext__()
    except StopAsyncIteration:
        return _END
