"""The relay: delivers outbox rows of one cache prefix that their committing process could not.

Every connected Database runs one (``outbox_relay``); ``alpha-data relay``
runs one as its own process. A relay claims due rows of ITS prefix with
``FOR UPDATE SKIP LOCKED`` (relays never wait on each other nor take the
same row), delivers the whole batch (one invalidation, one events pipeline)
and deletes it in the same transaction. After a failed batch the relay
itself backs off (capped at ``MAX_BACKOFF``, so undelivered work goes out
within about a second of Redis accepting writes again) while the rows are due
again almost at once: a relay whose own Redis is unreachable never holds work
back from a relay that can deliver it. It sleeps until the next row
is due, at most ``outbox_poll_interval``, and wakes at once on a NOTIFY for
its prefix (a dedicated asyncpg connection; none behind PgBouncer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import asyncpg

from alpha_data.cancellation import deadline
from alpha_data.outbox.effects import Effects, deliver, from_payload
from alpha_data.repositories import outbox as rows

if TYPE_CHECKING:
    from alpha_data.outbox.writer import Outbox

__all__ = ["MAX_BACKOFF", "Relay"]

log = logging.getLogger("alpha_data.outbox")

#: Longest wait before a failed row is tried again (keeps the 2 s redelivery bound).
MAX_BACKOFF = 1.0
#: A row that cannot even be parsed is retried this rarely (it is logged each time).
POISON_DELAY = 60.0
#: How soon rows of a failed batch are due again (for any relay).
FAILED_ROW_DELAY = 0.05


def backoff(attempts: int) -> float:
    """Seconds before retrying a row that failed ``attempts`` times before."""
    return min(MAX_BACKOFF, 0.1 * 2.0 ** min(attempts, 10))


class Relay:
    """Claims and delivers the outbox rows of ``outbox.prefix`` until stopped."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        dsn: str | None,
        batch: int = 200,
        poll_interval: float = 0.5,
    ) -> None:
        self.outbox = outbox
        self.dsn = dsn
        self.batch = batch
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._failed = False
        #: Set by ``stop``: the loop also ends on it, should Python < 3.12 lose the
        #: cancel (a wake-up landing with it: cpython gh-86296).
        self._stopping = False
        #: This relay's own wait after a failed delivery (0 after a success).
        self._retry_in = 0.0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Run in a background task of the current loop."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.ensure_future(self.run())
            self.outbox.relay_running = True

    async def stop(self) -> None:
        """Stop the loop and close the LISTEN connection."""
        task, self._task = self._task, None
        self.outbox.relay_running = False
        self._stopping = True
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._unlisten()

    async def run(self) -> None:
        """The loop: deliver what is due, then sleep until the next row is due or a NOTIFY."""
        while not self._stopping:
            try:
                await self._listen()
                while await self.step() >= self.batch:
                    pass
                backlog = await self.outbox.measure()
                wait = self.poll_interval
                if backlog.rows and backlog.next_due is not None:
                    wait = min(wait, max(0.01, backlog.next_due))
                if self._retry_in:  # its last delivery failed: back off itself
                    wait = self._retry_in
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failing(exc)
                wait = self.poll_interval
            else:
                if self._failed:
                    log.info("outbox relay works again")
                self._failed = False
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                async with deadline(wait):
                    await self._wake.wait()
            self._wake.clear()

    def _failing(self, exc: Exception) -> None:
        """Warn once per outage (PostgreSQL unreachable...), then only at DEBUG."""
        level = logging.DEBUG if self._failed else logging.WARNING
        log.log(level, "outbox relay cycle failed (%s); retrying", type(exc).__name__)
        self._failed = True

    # -- one batch -------------------------------------------------------------

    async def step(self) -> int:
        """Claim, deliver and delete one batch; how many rows it delivered."""
        outbox = self.outbox
        async with outbox.engine.begin() as conn:
            claimed = await rows.claim(conn, outbox.prefix, self.batch)
            if not claimed:
                self._retry_in = 0.0
                return 0
            good, effects = self._parse(claimed)
            bad = [r.id for r in claimed if r.id not in good]
            if bad:
                await rows.postpone(conn, bad, POISON_DELAY)
            try:
                await deliver(outbox.cache, outbox.events, effects, probe=True)
            except Exception as exc:
                self._retry_in = backoff(max(r.attempts for r in claimed))
                await rows.postpone(conn, list(good), FAILED_ROW_DELAY)
                log.info(
                    "outbox relay could not deliver %d rows (%s); retrying in %.2f s",
                    len(good),
                    type(exc).__name__,
                    self._retry_in,
                )
                return 0
            self._retry_in = 0.0
            await rows.delete_rows(conn, list(good))
        outbox.redelivered += len(good)
        oldest = min(r.created_at for r in claimed)
        log.info(
            "outbox relay delivered %d rows (%d tags, %d events; oldest committed at %s)",
            len(good),
            len(effects.tags),
            len(effects.events),
            oldest.isoformat(),
            extra={"outbox_ids": sorted(good)[:20], "prefix": outbox.prefix},
        )
        return len(good)

    @staticmethod
    def _parse(claimed: list[rows.OutboxRow]) -> tuple[dict[int, Effects], Effects]:
        """Each parsable row's effects and their union (tags merged, events in row order)."""
        good: dict[int, Effects] = {}
        merged = Effects()
        tags: set[str] = set()
        for row in claimed:
            try:
                effects = from_payload(row.payload, row.sequences)
            except Exception as exc:
                log.error("outbox row %d cannot be read (%s)", row.id, type(exc).__name__)
                continue
            good[row.id] = effects
            tags.update(effects.tags)
            merged.events.extend(effects.events)
        merged.tags = sorted(tags)
        return good, merged

    # -- LISTEN ------------------------------------------------------------------

    async def _listen(self) -> None:
        """(Re)open the LISTEN connection when it is missing or was closed."""
        if self.dsn is None:
            return
        listener = self._listener
        if listener is not None and not listener.is_closed():
            return
        await self._unlisten()
        try:
            listener = await asyncpg.connect(self.dsn, timeout=5)
            await listener.add_listener(rows.NOTIFY_CHANNEL, self._notified)
        except Exception as exc:
            log.debug("outbox relay cannot LISTEN (%s); polling", type(exc).__name__)
            return
        self._listener = listener

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if payload == self.outbox.prefix:
            self._wake.set()

    async def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=2)
