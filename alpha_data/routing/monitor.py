"""The replica monitor: learns fences, samples the primary, probes replicas, keeps the lag.

One background task per Router (started with the first routed read or
commit). Each round it

* learns a pending fence (the start fence, or a commit's): the primary's
  flushed WAL position read after the request;
* samples the primary's position with the monitor's clock taken *before* the
  query: every commit that finished before that time is at or below it;
* probes the replicas that are due: a replica that replayed past a sample
  taken at time ``t`` shows every commit that finished before ``t``, so its
  ``fresh_as_of`` is the newest such ``t``. A replica behind every sample this
  monitor took (a process that just started next to a lagging replica) is
  fresh as of its last replayed commit (``pg_last_xact_replay_timestamp()``,
  the primary's clock mapped onto the monitor's);
* schedules the next probe of a usable replica before its lag could pass
  ``replica_max_lag`` (half the remaining budget, at most the check interval),
  so a replica that keeps up is never dropped for want of a probe.

The clock and the servers (``Probes``) are injected: tests drive ``round()``
with fakes, without a task and without servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from alpha_data.routing.probes import PrimaryPosition, Probes, ReplicaPosition
from alpha_data.routing.replica import Replica

if TYPE_CHECKING:
    from alpha_data.routing.router import Router

__all__ = ["FENCE_POLL", "MIN_STEP", "SAMPLE_EVERY", "Monitor"]

log = logging.getLogger("alpha_data.routing")

#: Polling of replicas that are behind the fence: first interval (doubling to the check interval).
FENCE_POLL = 0.001
#: Shortest wait between probes of a replica nearing replica_max_lag.
MIN_STEP = 0.01
#: Primary samples kept for the lag estimate: one per SAMPLE_EVERY s (plus the newest).
SAMPLE_EVERY = 0.1
SAMPLES = 600


class Monitor:
    """Keeps a Router's fence and replica states current (see the module docstring)."""

    def __init__(self, router: Router, probes: Probes, clock: Callable[[], float]) -> None:
        self.router = router
        self.probes = probes
        self.clock = clock
        #: The primary's highest flushed LSN seen.
        self.primary_flushed = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=SAMPLES)
        self._offset: float | None = None  # primary wall clock minus self.clock()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False

    # -- one round ---------------------------------------------------------------

    async def round(self) -> None:
        """Learn a pending fence, sample the primary and probe the replicas that are due."""
        router, fence = self.router, self.router.fence
        now = self.clock()
        # Replicas polled only because they are behind the fence need no new sample.
        scheduled = any(now >= (r.due_at if r.healthy else r.retry_at) for r in router.replicas)
        if fence.pending or scheduled:
            target = fence.requested
            position = await self._sample()
            if position is not None and fence.pending:
                fence.learn(target, position.lsn)
            elif position is None and fence.pending:  # the primary is unreachable: retry soon
                await asyncio.sleep(min(router.check_interval, 0.1))
        due = [r for r in router.replicas if self._is_due(r, now)]  # after the fence moved
        if due:
            await asyncio.gather(*(self.probe(r) for r in due))

    def _is_due(self, replica: Replica, now: float) -> bool:
        if not replica.healthy:
            return now >= replica.retry_at
        return (
            now >= replica.due_at
            or replica.replay_lsn < self.router.fence.lsn
            or replica.fresh_as_of is None  # a new sample may tell its lag
        )

    async def _sample(self) -> PrimaryPosition | None:
        at = self.clock()
        try:
            position = await asyncio.wait_for(self.probes.primary(), self.router.probe_timeout)
        except Exception as exc:  # its reads will say so; the monitor carries on
            log.debug("cannot read the primary's WAL position: %r", exc)
            return None
        self.record(at, position)
        return position

    def record(self, at: float, position: PrimaryPosition) -> None:
        """Keep a primary sample read by a query sent at clock time ``at``."""
        lsn = max(self.primary_flushed, position.lsn)
        self.primary_flushed = lsn
        self._offset = position.clock - at
        samples = self._samples
        if len(samples) >= 2 and at - samples[-2][0] < SAMPLE_EVERY:
            samples[-1] = (at, lsn)  # keep the newest, spaced SAMPLE_EVERY before it
        else:
            samples.append((at, lsn))

    async def probe(self, replica: Replica) -> None:
        """Ask ``replica`` where it is; a failure marks it down.

        An answer to a probe sent before the replica's last failure is
        dropped: it may describe the standby before it restarted.
        """
        sent = self.clock()
        try:
            position = await asyncio.wait_for(
                self.probes.replica(replica.engine), self.router.probe_timeout
            )
        except Exception as exc:
            self.router.failed(replica, exc)
            return
        if sent >= replica.failed_at:
            self.observe(replica, position)

    def observe(self, replica: Replica, position: ReplicaPosition) -> None:
        """Update ``replica`` from a probe's answer (lag, schedule, warnings)."""
        if not position.in_recovery:
            self.router.failed(replica, "not in recovery (promoted?): it follows no primary")
            return
        now = self.clock()
        # Replay only moves back when the standby restarted from an earlier
        # restart point: then it shows less than before, and so do its reads.
        regressed = position.replay_lsn < replica.replay_lsn
        replica.replay_lsn = position.replay_lsn
        fresh = self.fresh_as_of(replica.replay_lsn, position.replay_time)
        if regressed or (
            fresh is not None and (replica.fresh_as_of is None or fresh > replica.fresh_as_of)
        ):
            replica.fresh_as_of = fresh
        replica.lag_bytes = max(0, self.primary_flushed - replica.replay_lsn)
        replica.due_at = self._next_probe(replica, now)
        if not replica.healthy:
            replica.healthy = True
            replica.failures = 0
            replica.last_error = None
            log.warning("read replica %s answers again; routing reads to it", replica.name)
        self._report_lag(replica, now)

    def fresh_as_of(self, replay_lsn: int, replay_time: float | None) -> float | None:
        """Clock time before which every commit is visible on a replica at ``replay_lsn``."""
        best: float | None = None
        for at, lsn in self._samples:  # oldest first, LSNs never decrease
            if lsn > replay_lsn:
                break
            best = at
        if best is None and replay_time is not None and self._offset is not None:
            best = replay_time - self._offset
        return best

    def _next_probe(self, replica: Replica, now: float) -> float:
        interval = self.router.check_interval
        lag = replica.lag(now)
        if lag is None or lag > self.router.max_lag:
            return now + interval
        budget = self.router.max_lag - lag
        return now + min(interval, max(MIN_STEP, budget / 2))

    def _report_lag(self, replica: Replica, now: float) -> None:
        lag = replica.lag(now)
        lagging = lag is not None and lag > self.router.max_lag
        if lagging == replica.lagging:
            return
        replica.lagging = lagging
        if lagging:
            log.warning(
                "read replica %s is %.1f s behind the primary (replica_max_lag %.1f s); "
                "it serves no reads until it catches up",
                replica.name,
                lag,
                self.router.max_lag,
            )
        else:
            log.warning("read replica %s caught up; routing reads to it", replica.name)

    # -- the background task -------------------------------------------------------

    def kick(self) -> None:
        """Run a round now (a commit to fence, a replica that failed)."""
        self.ensure_running()
        if self._wake is not None:
            self._wake.set()

    def ensure_running(self) -> None:
        """Start the task in the running event loop (again, if its loop changed)."""
        if self._closed or not self.router.replicas:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is not None and not self._task.done() and self._loop is loop:
            return
        self._loop = loop
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(), name="alpha_data.replica-monitor")

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        poll = FENCE_POLL
        while not self._closed:
            wake.clear()
            try:
                await self.round()
            except Exception:  # the monitor must survive anything
                log.exception("replica monitor round failed")
            if self.router.fence.pending:
                continue  # commits arrived during the round: fence them now
            wait, behind = self._next_wake()
            if behind:
                wait = min(wait, poll)
                poll = min(poll * 2, self.router.check_interval)
            else:
                poll = FENCE_POLL
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0.0, wait))

    def _next_wake(self) -> tuple[float, bool]:
        """Seconds until a replica is due, and whether one is behind the fence."""
        now = self.clock()
        fence = self.router.fence.lsn
        waits = [self.router.check_interval]
        behind = False
        for r in self.router.replicas:
            waits.append((r.due_at if r.healthy else r.retry_at) - now)
            behind = behind or (r.healthy and r.replay_lsn < fence)
        return min(waits), behind

    async def close(self) -> None:
        """Stop the task."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
