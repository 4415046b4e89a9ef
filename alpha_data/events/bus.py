"""``EventBus``: the two ways events leave a commit, and the ways they are received.

* ``publish`` / ``publish_many`` — Redis pub/sub on ``<prefix>:events:<channel>``:
  at most once, lowest latency, never raises for an outage (returns False).
* ``deliver`` — what the transactional outbox calls: in one round trip each
  event is appended to its durable stream ``<prefix>:stream:<channel>``
  (fields ``id``, ``seq``, ``data``; trimmed to about ``stream_maxlen``
  entries) *and* published on its pub/sub channel. It raises
  ``CacheUnavailable`` on any failure, so the caller keeps the events and
  delivers them again later (at least once).
* ``subscribe`` — pub/sub iterator (``Subscription``).
* ``consume`` — consumer-group iterator of deliveries (``Consumer``).

See docs/events.md for the guarantees side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from alpha_data.cache.backends import CacheBackend
from alpha_data.events.consumer import Consumer
from alpha_data.events.models import Event
from alpha_data.events.subscription import Subscription
from alpha_data.redisio.breaker import Breaker
from alpha_data.redisio.protocol import CacheUnavailable, StreamEntry

__all__ = ["DEFAULT_STREAM_MAXLEN", "EventBus"]

E = TypeVar("E", bound=Event)

#: Retention of each stream when no Settings say otherwise (Settings.event_stream_maxlen).
DEFAULT_STREAM_MAXLEN = 100_000


class _Closeable(Protocol):
    async def aclose(self) -> None: ...


class EventBus:
    """Publish, deliver, subscribe to and consume typed events under one key prefix."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        prefix: str,
        breaker: Breaker | None = None,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
    ) -> None:
        if stream_maxlen < 0:
            raise ValueError("stream_maxlen must be >= 0 (0 keeps every entry)")
        self.backend = backend
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen
        self.breaker = breaker or Breaker(
            name="events", fallback="events are not delivered until it is back"
        )
        self.published = 0
        self.failed = 0
        self._open: set[_Closeable] = set()

    def channel_for(self, event_type: type[Event]) -> str:
        """The full pub/sub channel name of an event class."""
        return f"{self.prefix}:events:{event_type.channel}"

    def stream_for(self, event_type: type[Event]) -> str:
        """The key of the durable stream of an event class."""
        return f"{self.prefix}:stream:{event_type.channel}"

    async def publish(self, event: Event) -> bool:
        """Send ``event`` on pub/sub; False (counted, warned sparingly) when it cannot."""
        return await self._publish([event])

    async def publish_many(self, events: Sequence[Event]) -> bool:
        """Send ``events`` on pub/sub in order, in one round trip; False when they cannot go."""
        return await self._publish(events)

    async def _publish(self, events: Sequence[Event]) -> bool:
        # One body for both (instrumentation wraps each public method once).
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
        self.breaker.success()
        self.published += len(events)
        return True

    def entry_for(self, event: Event) -> StreamEntry:
        """The stream entry (and pub/sub message) that carries ``event``."""
        data = event.model_dump_json().encode()
        fields = (("id", event.event_id.encode()), ("seq", str(event.sequence).encode()))
        return StreamEntry(
            stream=self.stream_for(type(event)),
            fields=(*fields, ("data", data)),
            channel=self.channel_for(type(event)),
            message=data,
        )

    async def deliver(self, events: Sequence[Event]) -> None:
        """Append ``events`` to their streams and publish them, in order, in one round trip.

        Raises ``CacheUnavailable`` when Redis does not take every one of them
        (down, stalled, erroring): the caller keeps them and delivers again,
        so a consumer may see an event twice, always with the same
        ``event_id``. It always tries (the breaker is not consulted, only
        told), so a recovered Redis is used at once.
        """
        if not events:
            return
        entries = [self.entry_for(event) for event in events]
        try:
            await self.backend.deliver(entries, self.stream_maxlen)
        except CacheUnavailable as exc:
            self.failed += len(events)
            self.breaker.failure(exc, "deliver")
            raise
        self.breaker.success()
        self.published += len(events)

    def subscribe(self, *event_types: type[E], reconnect_delay: float = 0.2) -> Subscription[E]:
        """An async iterator of pub/sub events of these types (see Subscription)."""
        if not event_types:
            raise ValueError("subscribe needs at least one event type")
        subscription = Subscription(self, event_types, reconnect_delay)
        self._open.add(subscription)
        return subscription

    def consume(
        self,
        group: str,
        *event_types: type[E],
        consumer: str | None = None,
        batch: int = 100,
        block: float = 1.0,
        idle: float = 30.0,
        history: bool = True,
        reconnect_delay: float = 0.1,
    ) -> Consumer[E]:
        """Durable deliveries of these event types for ``consumer`` of ``group`` (see Consumer).

        ``batch``: entries read per stream at once; ``block``: seconds one read
        waits for news; ``idle``: seconds after which another consumer's
        unacknowledged delivery is claimed (longer than handling a batch
        takes); ``history``: a new group starts at the oldest retained entry
        (False: at the next one delivered). ``consumer`` defaults to a name
        unique to this object: give a stable one to let a restarted process
        see its own pending entries first (after ``idle``).
        """
        made = Consumer(
            self,
            group,
            event_types,
            consumer=consumer,
            batch=batch,
            block=block,
            idle=idle,
            history=history,
            reconnect_delay=reconnect_delay,
        )
        self._open.add(made)
        return made

    def forget(self, closed: Any) -> None:
        """Called by a subscription or consumer when it closes."""
        self._open.discard(closed)

    async def close(self) -> None:
        """Close every subscription and consumer made through this bus."""
        still_open, self._open = self._open, set()
        for item in still_open:
            await item.aclose()
