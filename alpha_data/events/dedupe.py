"""``Deduplicator``: the idempotent-consumer helper for at-least-once deliveries.

Streams deliver at least once: a delivery claimed from a dead consumer, or
an event the outbox sent again after a lost reply, arrives twice with the
same ``event_id``; deliveries of one aggregate can arrive out of commit
order (two consumers, a claim). The helper remembers

* the ids of events handled (the last ``max_ids``, oldest forgotten first),
* the highest ``sequence`` handled per ``aggregate_key()``,

and judges each event: ``NEW``, ``DUPLICATE`` (id already handled) or
``STALE`` (not handled yet, but a later event of its aggregate was). Facts
(``TradeExecuted``) must still be handled when stale; state snapshots
(``PositionChanged``) should be skipped (``drop_stale=True``).

It lives in one process's memory: it catches the duplicates that reach this
process (a restart forgets them). A consumer whose effects must be exactly
once across restarts stores the handled ``event_id`` in its own database, in
the transaction of the effect (a unique column), and uses this only as a
fast path. See docs/events.md.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from alpha_data.errors import InvalidDataError
from alpha_data.events.consumer import Delivery
from alpha_data.events.models import Event

__all__ = ["Deduplicator", "Verdict"]


class Verdict(enum.Enum):
    """What ``Deduplicator.check`` found."""

    NEW = "new"
    DUPLICATE = "duplicate"
    STALE = "stale"


class Deduplicator:
    """Drops duplicates by ``event_id``; tracks the last ``sequence`` per aggregate."""

    def __init__(self, *, max_ids: int = 100_000, drop_stale: bool = False) -> None:
        if max_ids < 1:
            raise InvalidDataError("max_ids must be at least 1", column="max_ids")
        self.max_ids = max_ids
        self.drop_stale = drop_stale
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._last: dict[str, int] = {}
        #: How many events ``handle`` skipped as duplicates / as stale.
        self.duplicates = 0
        self.stale = 0

    def check(self, event: Event) -> Verdict:
        """Judge ``event`` against what was handled (records nothing)."""
        if event.event_id in self._ids:
            return Verdict.DUPLICATE
        if 0 < event.sequence <= self._last.get(event.aggregate_key(), 0):
            return Verdict.STALE
        return Verdict.NEW

    def remember(self, event: Event) -> None:
        """Record ``event`` as handled (call it once its effect is done)."""
        self._ids[event.event_id] = None
        self._ids.move_to_end(event.event_id)
        while len(self._ids) > self.max_ids:
            self._ids.popitem(last=False)
        key = event.aggregate_key()
        if event.sequence > self._last.get(key, 0):
            self._last[key] = event.sequence

    def last_sequence(self, aggregate_key: str) -> int:
        """The highest sequence handled for ``aggregate_key`` (0: none)."""
        return self._last.get(aggregate_key, 0)

    async def handle(
        self, delivery: Delivery[Any], handler: Callable[[Any], Awaitable[object]]
    ) -> Verdict:
        """Run ``handler(event)`` unless it is a duplicate (or stale, with ``drop_stale``).

        The event is remembered and the delivery acknowledged only after the
        handler returned; when it raises, neither happens, so the delivery
        comes back after the consumer's idle time.
        """
        event = delivery.event
        verdict = self.check(event)
        if verdict is Verdict.DUPLICATE:
            self.duplicates += 1
        elif verdict is Verdict.STALE and self.drop_stale:
            self.stale += 1
        else:
            await handler(event)
            self.remember(event)
        await delivery.ack()
        return verdict
