"""Typed events: pub/sub fan-out (at most once) and durable streams (at least once).

Events are pydantic models with a unique ``event_id`` and a per-aggregate
``sequence``::

    await db.events.publish(TradeExecuted(...))           # pub/sub, after a commit
    uow.publish_after_commit(TradeExecuted(...))          # inside a unit of work

    async for event in db.events.subscribe(TradeExecuted, AlertRaised):
        ...                                               # typed, parsed events

``EventBus.deliver`` (used by the transactional outbox) appends events to
Redis Streams as well, for consumers that must see every event::

    async with db.events.consume("billing", TradeExecuted) as deliveries:
        async for delivery in deliveries:
            await dedupe.handle(delivery, bill)   # Deduplicator: once per event_id

The guarantees of each path are in docs/events.md.
"""

from __future__ import annotations

from alpha_data.events.bus import DEFAULT_STREAM_MAXLEN, EventBus
from alpha_data.events.consumer import Consumer, Delivery
from alpha_data.events.dedupe import Deduplicator, Verdict
from alpha_data.events.models import (
    AlertRaised,
    Event,
    PositionChanged,
    TradeExecuted,
    event_type,
    event_types,
)
from alpha_data.events.subscription import Subscription

__all__ = [
    "DEFAULT_STREAM_MAXLEN",
    "AlertRaised",
    "Consumer",
    "Deduplicator",
    "Delivery",
    "Event",
    "EventBus",
    "PositionChanged",
    "Subscription",
    "TradeExecuted",
    "Verdict",
    "event_type",
    "event_types",
]
