"""What the replica monitor asks the servers: WAL positions and replay times.

The monitor talks to the servers only through a ``Probes`` object, so its
logic runs in unit tests against fakes (tests/unit/test_routing_monitor.py)
and in production against the engines (``EngineProbes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["CommitPosition", "EngineProbes", "PrimaryPosition", "Probes", "ReplicaPosition"]

_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}

# A COMMIT returns only after its record is flushed, so the flush position
# read after it is at or past the commit; a standby never has WAL the primary
# has not flushed. clock_timestamp() maps the replica's replay time (taken
# from the primary's clock) onto the monitor's clock.
_PRIMARY = text(
    "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint,"
    " extract(epoch FROM clock_timestamp())::float8"
)
# The insert position is past the commit record of every transaction whose
# COMMIT has returned, even with synchronous_commit = off (not yet flushed);
# the flush position is what a standby can reach.
_COMMITTED = text(
    "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint,"
    " (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint"
)
_REPLICA = text(
    "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,"
    " extract(epoch FROM pg_last_xact_replay_timestamp())::float8"
)


@dataclass(frozen=True)
class PrimaryPosition:
    """The primary's flushed WAL position and its wall clock (epoch seconds) when read."""

    lsn: int
    clock: float


@dataclass(frozen=True)
class CommitPosition:
    """The primary's WAL after some commits returned.

    ``inserted`` is at or past each of their commit records (the cache's
    invalidation LSN); ``flushed`` is what a standby can replay (the
    read-your-writes fence, like the monitor's samples).
    """

    inserted: int
    flushed: int


@dataclass(frozen=True)
class ReplicaPosition:
    """A replica's state: still following the primary, replayed LSN, last replayed commit.

    ``replay_time`` is the commit time (primary's clock, epoch seconds) of the
    last transaction the replica replayed; None when it replayed none yet.
    """

    in_recovery: bool
    replay_lsn: int
    replay_time: float | None


class Probes(Protocol):
    """Reads WAL positions from the primary and the replicas (raises when unreachable)."""

    async def primary(self) -> PrimaryPosition:
        """The primary's flushed WAL position now."""
        ...

    async def replica(self, engine: AsyncEngine) -> ReplicaPosition:
        """The state of the replica behind ``engine``."""
        ...

    async def committed(self) -> CommitPosition:
        """Where the primary's WAL is now: past every commit that has returned."""
        ...


class EngineProbes:
    """``Probes`` over SQLAlchemy engines (one autocommit statement each)."""

    def __init__(self, primary: AsyncEngine) -> None:
        self._primary = primary.execution_options(**_AUTOCOMMIT)

    async def primary(self) -> PrimaryPosition:
        """The primary's ``pg_current_wal_flush_lsn()`` and ``clock_timestamp()``."""
        async with self._primary.connect() as conn:
            lsn, clock = (await conn.execute(_PRIMARY)).one()
        return PrimaryPosition(int(lsn), float(clock))

    async def committed(self) -> CommitPosition:
        """The primary's insert and flush positions, in one statement."""
        async with self._primary.connect() as conn:
            inserted, flushed = (await conn.execute(_COMMITTED)).one()
        return CommitPosition(int(inserted), int(flushed))

    async def replica(self, engine: AsyncEngine) -> ReplicaPosition:
        """``pg_is_in_recovery()``, replay LSN and last replayed commit time of a replica."""
        async with engine.execution_options(**_AUTOCOMMIT).connect() as conn:
            in_recovery, lsn, replayed = (await conn.execute(_REPLICA)).one()
        return ReplicaPosition(
            bool(in_recovery), int(lsn or 0), None if replayed is None else float(replayed)
        )
