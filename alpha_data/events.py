"""Typed publish/subscribe over Redis pub/sub (or the in-process backend).

Events are pydantic models sent as JSON on ``<prefix>:events:<channel>``::

    await db.events.publish(TradeExecuted(...))           # after a commit
    uow.publish_after_commit(TradeExecuted(...))          # inside a unit of work

    async for event in db.events.subscribe(TradeExecuted, AlertRaised):
        ...                                               # typed, parsed events

Delivery is Redis pub/sub: at most once, to subscribers connected at the
time. A subscription survives connection loss and Redis restarts by
resubscribing (with backoff); events published while it was disconnected
are not replayed. Publishing never raises for an outage: it returns False.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alpha_data.cache.backends import CacheBackend, CacheUnavailable, PubSubLink
from alpha_data.cache.breaker import Breaker

__all__ = [
    "AlertRaised",
    "Event",
    "EventBus",
    "PositionChanged",
    "Subscription",
    "TradeExecuted",
    "event_type",
]

log = logging.getLogger("alpha_data.events")

E = TypeVar("E", bound="Event")

_MAX_BACKOFF = 5.0


_TYPES: dict[str, type[Event]] = {}


class Event(BaseModel):
    """Base of every event; ``channel`` names the channel it travels on.

    ``event_id`` is unique (consumers drop duplicates by it); ``sequence`` is
    the per-aggregate number the outbox assigns at commit (0 until then).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    channel: ClassVar[str] = "event"
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    sequence: int = 0

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _TYPES[cls.channel] = cls

    def aggregate_key(self) -> str:
        """The aggregate whose order the sequence keeps (e.g. ``portfolio:12``)."""
        return self.channel


def event_type(channel: str) -> type[Event]:
    """The event class travelling on ``channel`` (KeyError for an unknown one)."""
    return _TYPES[channel]


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

    def aggregate_key(self) -> str:
        return f"portfolio:{self.portfolio_id}"


class PositionChanged(Event):
    """A position's quantity changed (0 means it was closed)."""

    channel: ClassVar[str] = "position_changed"
    portfolio_id: int
    symbol: str
    quantity: Decimal
    entry_price: Decimal | None

    def aggregate_key(self) -> str:
        return f"portfolio:{self.portfolio_id}"


class AlertRaised(Event):
    """An alert was committed."""

    channel: ClassVar[str] = "alert_raised"
    alert_id: int
    title: str
    severity: str
    source: str

    def aggregate_key(self) -> str:
        return f"alert:{self.alert_id}"


class Subscription(Generic[E]):
    """An async iterator of typed events; resubscribes after the link drops.

    Subscribing happens on first iteration or on ``await start()`` (which
    returns once the subscription is confirmed, so nothing published after
    it is missed). Close it with ``aclose()`` or ``async with``.
    """

    def __init__(
        self, bus: EventBus, event_types: tuple[type[E], ...], reconnect_delay: float
    ) -> None:
        self._bus = bus
        self._types = {bus.channel_for(t): t for t in event_types}
        self._delay = reconnect_delay
        self._link: PubSubLink | None = None
        self._closed = False
        #: How many times the link was lost and re-established.
        self.reconnects = 0

    async def start(self) -> Subscription[E]:
        """Subscribe now (retrying until it succeeds); returns self."""
        await self._connect()
        return self

    async def _connect(self) -> PubSubLink:
        delay = self._delay
        while self._link is None:
            if self._closed:
                raise StopAsyncIteration
            try:
                self._link = await self._bus.backend.subscribe(list(self._types))
            except CacheUnavailable as exc:
                self._bus.breaker.failure(exc, "subscribe")
                await asyncio.sleep(delay)
                delay = min(_MAX_BACKOFF, delay * 2)
        return self._link

    def __aiter__(self) -> Subscription[E]:
        return self

    async def __anext__(self) -> E:
        while True:
            link = await self._connect()
            try:
                received = await link.receive(1.0)
            except CacheUnavailable as exc:
                self._bus.breaker.failure(exc, "subscription")
                self._link = None
                await link.close()
                self.reconnects += 1
                await asyncio.sleep(self._delay)
                continue
            if received is None:
                if self._closed:
                    raise StopAsyncIteration
                continue
            channel, data = received
            event_type = self._types.get(channel)
            if event_type is None:
                continue
            try:
                return event_type.model_validate_json(data)
            except ValidationError:
                log.warning("dropped a malformed event", extra={"channel": channel})

    async def aclose(self) -> None:
        """Unsubscribe; iteration stops."""
        self._closed = True
        self._bus._subscriptions.discard(self)
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    async def __aenter__(self) -> Subscription[E]:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventBus:
    """Publish typed events as JSON on ``<prefix>:events:<channel>``; subscribe to them."""

    def __init__(
        self, backend: CacheBackend, *, prefix: str, breaker: Breaker | None = None
    ) -> None:
        self.backend = backend
        self.prefix = prefix
        self.breaker = breaker or Breaker(
            name="events", fallback="events are not delivered until it is back"
        )
        self.published = 0
        self.failed = 0
        self._subscriptions: set[Subscription[Any]] = set()

    def channel_for(self, event_type: type[Event]) -> str:
        """The full channel name of an event class."""
        return f"{self.prefix}:events:{event_type.channel}"

    async def publish(self, event: Event) -> bool:
        """Send ``event``; False (counted, warned at most once per interval) when it cannot."""
        if not self.breaker.allow():
            self.failed += 1
            return False
        try:
            await self.backend.publish(
                self.channel_for(type(event)), event.model_dump_json().encode()
            )
        except CacheUnavailable as exc:
            self.failed += 1
            self.breaker.failure(exc, f"publish {type(event).__name__}")
            return False
        self.published += 1
        return True

    async def publish_many(self, events: Sequence[Event]) -> bool:
        """Send ``events`` in order, in one round trip; False (counted) when they cannot go."""
        if not events:
            return True
        if not self.breaker.allow():
            self.failed += len(events)
            return False
        messages = [
            (self.channel_for(type(event)), event.model_dump_json().encode()) for event in events
        ]
        try:
            await self.backend.publish_many(messages)
        except CacheUnavailable as exc:
            self.failed += len(events)
            self.breaker.failure(exc, "publish")
            return False
        self.published += len(events)
        return True

    async def deliver(self, events: Sequence[Event]) -> None:
        """Send ``events`` in order in one round trip; raises CacheUnavailable when they cannot."""
        if not events:
            return
        messages = [
            (self.channel_for(type(event)), event.model_dump_json().encode()) for event in events
        ]
        try:
            await self.backend.publish_many(messages)
        except CacheUnavailable as exc:
            self.failed += len(events)
            self.breaker.failure(exc, "deliver")
            raise
        self.published += len(events)

    def subscribe(self, *event_types: type[E], reconnect_delay: float = 0.2) -> Subscription[E]:
        """An async iterator of events of these types (see Subscription)."""
        if not event_types:
            raise ValueError("subscribe needs at least one event type")
        subscription = Subscription(self, event_types, reconnect_delay)
        self._subscriptions.add(subscription)
        return subscription

    async def close(self) -> None:
        """Close every subscription made through this bus."""
        subscriptions, self._subscriptions = self._subscriptions, set()
        for subscription in subscriptions:
            await subscription.aclose()
