"""Typed publish/subscribe over the cache backend's pub/sub (Redis or in-process)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from alpha_data.cache.backends import CacheBackend, CacheUnavailable

__all__ = ["AlertRaised", "Event", "EventBus", "PositionChanged", "TradeExecuted"]

log = logging.getLogger("alpha_data.events")

E = TypeVar("E", bound="Event")


class Event(BaseModel):
    """Base of every event; ``channel`` names the Redis channel it travels on."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    channel: ClassVar[str] = "event"


class TradeExecuted(Event):
    """A trade was committed."""

    channel: ClassVar[str] = "trade_executed"
    trade_id: int
    portfolio_id: int
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    executed_at: datetime


class PositionChanged(Event):
    """A position's quantity changed (0 means it was closed)."""

    channel: ClassVar[str] = "position_changed"
    portfolio_id: int
    symbol: str
    quantity: Decimal
    entry_price: Decimal | None


class AlertRaised(Event):
    """An alert was committed."""

    channel: ClassVar[str] = "alert_raised"
    alert_id: int
    title: str
    severity: str
    source: str


class EventBus:
    """Publish typed events as JSON on ``<prefix>:events:<channel>``; subscribe to them."""

    def __init__(self, backend: CacheBackend, *, prefix: str) -> None:
        self.backend = backend
        self.prefix = prefix
        self.published = 0
        self.failed = 0

    def channel_for(self, event_type: type[Event]) -> str:
        """The full channel name of an event class."""
        return f"{self.prefix}:events:{event_type.channel}"

    async def publish(self, event: Event) -> bool:
        """Send ``event``; returns False (and logs) when the bus is unreachable."""
        try:
            await self.backend.publish(
                self.channel_for(type(event)), event.model_dump_json().encode()
            )
        except CacheUnavailable as exc:
            self.failed += 1
            log.warning("event not published: bus unavailable", extra={"error": str(exc)})
            return False
        self.published += 1
        return True

    async def subscribe(
        self, *event_types: type[E], reconnect_delay: float = 0.5
    ) -> AsyncIterator[E]:
        """Yield parsed events of the given types; resubscribes after a Redis restart."""
        if not event_types:
            raise ValueError("subscribe needs at least one event type")
        by_channel = {self.channel_for(t): t for t in event_types}
        while True:
            try:
                async for channel, data in self.backend.subscribe(list(by_channel)):
                    event_type = by_channel.get(channel)
                    if event_type is None:
                        continue
                    try:
                        yield event_type.model_validate_json(data)
                    except ValueError:
                        log.warning("dropped malformed event", extra={"channel": channel})
            except CacheUnavailable:
                log.warning("event subscription lost; resubscribing")
                await asyncio.sleep(reconnect_delay)

    async def close(self) -> None:
        """Nothing to release: subscriptions end with their iterators."""
        return None
