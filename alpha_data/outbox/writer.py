"""The Database's outbox: a commit's effects written in its transaction, delivered after it.

``record`` runs as the unit of work's last statement before COMMIT (one
INSERT, with the per-aggregate sequence bump in the same statement when the
commit has events). After COMMIT, ``deliver`` is the fast path: invalidate
the tags and deliver the events at once. Rows delivered this way are deleted
in batches by a background task; rows it could not deliver are made due at
once and the relays of the prefix are woken (NOTIFY). A row whose committing
process died or lost the COMMIT reply becomes due after ``outbox_grace``
seconds and any live relay of the prefix delivers it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alpha_data.outbox.effects import Effects, deliver, sequenced
from alpha_data.repositories import outbox as rows

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from alpha_data.cache import Cache
    from alpha_data.events import Event, EventBus

__all__ = ["Outbox", "OutboxStats", "Recorded"]

log = logging.getLogger("alpha_data.outbox")

#: How long delivered row ids gather before one DELETE removes them (well under
#: ``outbox_grace``, after which a relay could deliver them again).
FLUSH_DELAY = 0.05


@dataclass(frozen=True)
class Recorded:
    """A row written in the current transaction: its id and its (sequenced) effects."""

    id: int
    effects: Effects


@dataclass(frozen=True)
class OutboxStats:
    """Outbox figures: ``backlog`` undelivered rows of this prefix and the oldest one's
    age (s) as the relay last saw them; commits delivered at once / left to the relays;
    rows the relays of this Database delivered; whether its relay runs."""

    backlog: int
    oldest_age: float
    delivered: int
    deferred: int
    redelivered: int
    relay_running: bool


class Outbox:
    """Writes a commit's effects into ``alphapulse.outbox`` and delivers them after COMMIT."""

    def __init__(self, engine: AsyncEngine, cache: Cache, events: EventBus, grace: float) -> None:
        self.engine = engine
        self.cache = cache
        self.events = events
        self.prefix = cache.prefix
        self.grace = grace
        self.delivered = 0
        self.deferred = 0
        self.redelivered = 0
        self.relay_running = False
        self._backlog = rows.Backlog(0, 0.0, None)
        self._seen_at = time.monotonic()
        self._done: list[int] = []
        self._released: list[int] = []
        self._flushing: asyncio.Task[None] | None = None

    def effects(self, tags: set[str], events: list[Event]) -> Effects:
        """The effects of a commit (tags only when the cache is on)."""
        return Effects(tags=sorted(tags) if self.cache.enabled else [], events=list(events))

    async def record(self, session: AsyncSession, effects: Effects) -> Recorded | None:
        """Write the row in ``session``'s transaction (nothing for a commit without effects)."""
        if not effects:
            return None
        row_id, taken = await rows.write(
            session, self.prefix, effects.payload(), effects.counts(), self.grace
        )
        return Recorded(row_id, Effects(effects.tags, sequenced(effects.events, taken)))

    async def deliver(self, recorded: Recorded) -> bool:
        """The fast path after COMMIT; False leaves the row to the relays (never raises)."""
        try:
            await deliver(self.cache, self.events, recorded.effects)
        except Exception as exc:
            self.deferred += 1
            # DEBUG: the cache/events breakers already warn once per outage.
            log.debug(
                "after-commit effects left to the outbox relay (%s)",
                type(exc).__name__,
                extra={"outbox_id": recorded.id},
            )
            self._later(self._released, recorded.id)
            return False
        self.delivered += 1
        self._later(self._done, recorded.id)
        return True

    def _later(self, queue: list[int], row_id: int) -> None:
        queue.append(row_id)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        """Delete delivered rows and release undelivered ones, batched, until none wait."""
        await asyncio.sleep(FLUSH_DELAY)  # let the commits of the next moments join the batch
        while self._done or self._released:
            done, self._done = self._done, []
            released, self._released = self._released, []
            try:
                async with self.engine.begin() as conn:
                    await rows.delete_rows(conn, done)
                    if released:
                        await rows.release(conn, self.prefix, released)
            except Exception:
                # The rows stay; the relays deliver them again (same event ids).
                log.warning("could not mark %d outbox rows", len(done) + len(released))
                return

    # -- what the relay reports ------------------------------------------------

    def saw(self, backlog: rows.Backlog) -> None:
        """Remember the backlog the relay last measured."""
        self._backlog = backlog
        self._seen_at = time.monotonic()

    def stats(self) -> OutboxStats:
        """The figures of ``db.stats().outbox`` (no I/O; the age keeps growing between polls)."""
        backlog = self._backlog
        age = backlog.oldest_age + (time.monotonic() - self._seen_at) if backlog.rows else 0.0
        return OutboxStats(
            backlog=backlog.rows,
            oldest_age=age,
            delivered=self.delivered,
            deferred=self.deferred,
            redelivered=self.redelivered,
            relay_running=self.relay_running,
        )

    async def measure(self) -> rows.Backlog:
        """Query the backlog of this prefix now (health checks)."""
        async with self.engine.connect() as conn:
            backlog = await rows.backlog(conn, self.prefix)
        self.saw(backlog)
        return backlog

    async def close(self, timeout: float = 2.0) -> None:
        """Finish marking rows (undelivered ones stay for the relays)."""
        task = self._flushing
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except Exception:
                task.cancel()
