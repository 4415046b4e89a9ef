"""The pub/sub side: ``Subscription``, an async iterator of typed events.

Delivery is Redis pub/sub: at most once, to subscribers connected at the
time. A subscription survives connection loss and Redis restarts by
resubscribing (with backoff); events published while it was disconnected
are not replayed (the durable path is ``EventBus.consume``, see
docs/events.md).
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic import ValidationError

from alpha_data.events.models import Event
from alpha_data.redisio.protocol import CacheUnavailable, PubSubLink

if TYPE_CHECKING:
    from alpha_data.events.bus import EventBus

__all__ = ["Subscription"]

log = logging.getLogger("alpha_data.events")

E = TypeVar("E", bound=Event)

_MAX_BACKOFF = 5.0


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
        self._bus.forget(self)
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
