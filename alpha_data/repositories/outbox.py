"""The outbox tables and their statements (PostgreSQL: ON CONFLICT, SKIP LOCKED, NOTIFY).

``alphapulse.outbox`` holds one row per commit that had after-commit effects
(cache invalidation tags and events), written in that commit's transaction;
``alphapulse.event_sequences`` the per-aggregate event counters. Both are
managed by the hand-written revision 0003 (not the ORM metadata). The relay
loop itself lives in ``alpha_data.outbox``; every statement it sends is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = [
    "NOTIFY_CHANNEL",
    "Backlog",
    "OutboxRow",
    "backlog",
    "claim",
    "delete_rows",
    "event_sequences_table",
    "outbox_table",
    "postpone",
    "release",
    "write",
]

SCHEMA = "alphapulse"
#: The LISTEN/NOTIFY channel; the payload is the cache prefix whose rows became due.
NOTIFY_CHANNEL = "alpha_data_outbox"

_metadata = MetaData(schema=SCHEMA)  # not the ORM metadata: managed by revision 0003

outbox_table = Table(
    "outbox",
    _metadata,
    Column("id", BigInteger, primary_key=True),
    Column("cache_prefix", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("sequences", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("available_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
)
event_sequences_table = Table(
    "event_sequences",
    _metadata,
    Column("aggregate", Text, primary_key=True),
    Column("last", BigInteger, nullable=False),
)
_o = outbox_table.c
_s = event_sequences_table.c


class OutboxRow(NamedTuple):
    """A claimed row: its payload (tags, events) and the sequences its commit took."""

    id: int
    payload: dict[str, Any]
    sequences: dict[str, int]
    created_at: datetime
    attempts: int


class Backlog(NamedTuple):
    """Undelivered rows of one prefix: how many, the oldest's age, when the next is due."""

    rows: int
    oldest_age: float
    next_due: float | None


def _due_at(delay: float) -> Any:
    return func.clock_timestamp() + func.make_interval(
        0, 0, 0, 0, 0, 0, bindparam("delay", delay, type_=Float)
    )


def _write_with_sequences() -> Any:
    """One statement: bump the aggregates' counters (CTE) and insert the row with them."""
    pairs = (
        func.unnest(
            bindparam("aggregates", type_=ARRAY(Text)), bindparam("counts", type_=ARRAY(BigInteger))
        )
        .table_valued("aggregate", "n")
        .render_derived(name="t")
    )
    upsert = pg_insert(event_sequences_table).from_select(
        ["aggregate", "last"], select(pairs.c.aggregate, pairs.c.n)
    )
    bumped = upsert.on_conflict_do_update(
        index_elements=[_s.aggregate], set_={"last": _s.last + upsert.excluded.last}
    ).returning(_s.aggregate, _s.last)
    taken = bumped.cte("taken")
    sequences = select(
        func.coalesce(func.jsonb_object_agg(taken.c.aggregate, taken.c.last), literal({}, JSONB))
    ).scalar_subquery()
    return _insert_row(sequences)


def _insert_row(sequences: Any) -> Any:
    return (
        insert(outbox_table)
        .from_select(
            ["cache_prefix", "payload", "sequences", "available_at"],
            select(
                bindparam("prefix", type_=Text),
                bindparam("payload", type_=JSONB),
                sequences,
                func.clock_timestamp()
                + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("grace", type_=Float)),
            ),
        )
        .returning(_o.id, _o.sequences)
    )


_WRITE_EVENTS = _write_with_sequences()
_WRITE_TAGS = _insert_row(literal({}, JSONB))


async def write(
    session: AsyncSession,
    prefix: str,
    payload: Mapping[str, Any],
    counts: Mapping[str, int],
    grace: float,
) -> tuple[int, dict[str, int]]:
    """Insert the commit's row (one round trip); the id and ``{aggregate: last}`` it took.

    ``counts`` is how many events of each aggregate the commit has; their
    counters are bumped in sorted order (two commits never wait on each
    other crosswise). Relays may claim the row ``grace`` seconds from now.
    """
    params: dict[str, Any] = {"prefix": prefix, "payload": dict(payload), "grace": grace}
    statement = _WRITE_TAGS
    if counts:
        aggregates = sorted(counts)
        params.update(aggregates=aggregates, counts=[counts[a] for a in aggregates])
        statement = _WRITE_EVENTS
    row = (await session.execute(statement, params)).one()
    return int(row.id), {str(k): int(v) for k, v in row.sequences.items()}


async def claim(conn: AsyncConnection, prefix: str, limit: int) -> list[OutboxRow]:
    """Lock up to ``limit`` due rows of ``prefix`` that no other relay holds (oldest first)."""
    statement = (
        select(_o.id, _o.payload, _o.sequences, _o.created_at, _o.attempts)
        .where(_o.cache_prefix == prefix, _o.available_at <= func.clock_timestamp())
        .order_by(_o.available_at, _o.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await conn.execute(statement)
    return [OutboxRow(*row) for row in result]


async def delete_rows(conn: AsyncConnection, ids: Sequence[int]) -> int:
    """Remove delivered rows in one statement; how many were still there."""
    if not ids:
        return 0
    result: Any = await conn.execute(delete(outbox_table).where(_o.id == any_(_ids(ids))))
    return int(result.rowcount)


async def postpone(conn: AsyncConnection, ids: Sequence[int], delay: float) -> None:
    """Count a failed delivery of ``ids`` and make them due again in ``delay`` seconds."""
    if ids:
        await conn.execute(
            update(outbox_table)
            .where(_o.id == any_(_ids(ids)))
            .values(attempts=_o.attempts + 1, available_at=_due_at(delay))
        )


async def release(conn: AsyncConnection, prefix: str, ids: Sequence[int]) -> None:
    """Make ``ids`` due now and wake the relays of ``prefix`` (its writer could not deliver)."""
    if ids:
        await conn.execute(
            update(outbox_table)
            .where(_o.id == any_(_ids(ids)))
            .values(available_at=func.clock_timestamp())
        )
    await conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, bindparam("p", prefix, Text))))


async def backlog(conn: AsyncConnection, prefix: str) -> Backlog:
    """Undelivered rows of ``prefix``: count, oldest age (s), seconds until the next is due."""
    now = func.clock_timestamp()
    row = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.extract("epoch", now - func.min(_o.created_at)), 0.0),
                func.extract("epoch", func.min(_o.available_at) - now),
            ).where(_o.cache_prefix == prefix)
        )
    ).one()
    due = None if row[2] is None else float(row[2])
    return Backlog(rows=int(row[0]), oldest_age=max(0.0, float(row[1])), next_due=due)


def _ids(ids: Sequence[int]) -> Any:
    return bindparam("ids", list(ids), type_=ARRAY(BigInteger))
