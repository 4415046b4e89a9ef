"""Fakes for routing unit tests: a clock the test moves and servers that are plain state.

``FakeServers`` plays a primary and its replicas as numbers: the primary's
flushed LSN grows with each commit (stamped with the fake clock), a replica
replays up to an LSN; probes read that state. No sockets are opened: the
engines given to the Router are never connected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from alpha_data.routing import CommitPosition, PrimaryPosition, ReplicaPosition, Router

#: The primary's insert position runs this far ahead of its flushed one (WAL not yet written).
INSERT_AHEAD = 40
#: The fake wall clock of the primary runs this far ahead of the monitor's clock.
WALL_OFFSET = 1_700_000_000.0


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeReplica:
    """A standby: replays WAL up to ``replayed`` (paused or not), may be down or promoted."""

    replayed: int = 0
    paused: bool = False
    down: bool = False
    in_recovery: bool = True


@dataclass
class FakeServers:
    """A primary's commit log (LSN, commit time) and the standbys following it."""

    clock: FakeClock
    commits: list[tuple[int, float]] = field(default_factory=list)
    flushed: int = 1000
    primary_down: bool = False
    replicas: dict[AsyncEngine, FakeReplica] = field(default_factory=dict)

    def commit(self) -> int:
        """A commit on the primary now; replicas that are not paused replay it at once."""
        self.flushed += 100
        self.commits.append((self.flushed, self.clock()))
        for replica in self.replicas.values():
            if not replica.paused:
                replica.replayed = self.flushed
        return self.flushed

    def resume(self, replica: FakeReplica) -> None:
        replica.paused = False
        replica.replayed = self.flushed

    def staleness(self, replica: FakeReplica, now: float) -> float:
        """How old the oldest commit is that the replica does not show (0: none missing)."""
        missing = [at for lsn, at in self.commits if lsn > replica.replayed]
        return now - min(missing) if missing else 0.0

    # -- Probes --------------------------------------------------------------------

    async def primary(self) -> PrimaryPosition:
        if self.primary_down:
            raise ConnectionRefusedError("primary down")
        return PrimaryPosition(self.flushed, self.clock() + WALL_OFFSET)

    async def committed(self) -> CommitPosition:
        if self.primary_down:
            raise ConnectionRefusedError("primary down")
        return CommitPosition(self.flushed + INSERT_AHEAD, self.flushed)

    async def replica(self, engine: AsyncEngine) -> ReplicaPosition:
        replica = self.replicas[engine]
        if replica.down:
            raise ConnectionRefusedError("replica down")
        replayed = [at for lsn, at in self.commits if lsn <= replica.replayed]
        last = replayed[-1] + WALL_OFFSET if replayed else None
        return ReplicaPosition(replica.in_recovery, replica.replayed, last)


def engine(port: int) -> AsyncEngine:
    """An engine that is never connected (the fakes answer every probe)."""
    return create_async_engine(f"postgresql+asyncpg://u@127.0.0.1:{port}/none")


def make_router(
    count: int = 1, *, max_lag: float = 10.0, interval: float = 1.0, **kw: object
) -> tuple[Router, FakeServers, list[FakeReplica]]:
    """A Router over ``count`` fake replicas, all caught up with the primary."""
    clock = FakeClock()
    servers = FakeServers(clock)
    engines = [engine(15432 + i) for i in range(count)]
    fakes = [FakeReplica(replayed=servers.flushed) for _ in engines]
    servers.replicas = dict(zip(engines, fakes, strict=True))
    router = Router(
        engine(15431),
        [(f"replica{i}", e) for i, e in enumerate(engines)],
        check_interval=interval,
        max_lag=max_lag,
        probes=servers,
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )
    return router, servers, fakes
