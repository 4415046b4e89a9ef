"""The durable side: ``Consumer``, an async iterator of deliveries from Redis Streams.

``db.events.consume("billing", TradeExecuted, PositionChanged)`` reads the
streams of those event types through consumer group ``billing``:

* each group gets every event (two groups: two full copies); consumers of
  one group share the work (each entry goes to one of them);
* a delivery stays *pending* until ``await delivery.ack()``; one that is not
  acknowledged within ``idle`` seconds (its consumer died, hung or lost its
  connection) is claimed (XAUTOCLAIM) by a live consumer of the group and
  delivered again: **at least once**, duplicates carry the same
  ``event_id`` (see ``Deduplicator``);
* the group is created on first use (``XGROUP CREATE ... MKSTREAM``, from
  the oldest retained entry unless ``history=False``); after a connection
  kill or a Redis restart the consumer backs off, re-creates the group if
  Redis lost it, and goes on. Pending entries live in Redis, not in the
  consumer, so nothing acknowledged or not is forgotten by a reconnect.

Close it with ``aclose()`` or ``async with``; iteration then stops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic import ValidationError

from alpha_data.cancellation import guarded
from alpha_data.errors import InvalidDataError
from alpha_data.events.models import Event
from alpha_data.redisio.protocol import CacheUnavailable, StreamMessage

if TYPE_CHECKING:
    from alpha_data.events.bus import EventBus

__all__ = ["Consumer", "Delivery", "default_consumer_name"]

log = logging.getLogger("alpha_data.events")

E = TypeVar("E", bound=Event)

_MAX_BACKOFF = 5.0
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


def default_consumer_name() -> str:
    """``<host>:<pid>:<random>``: unique per consumer object, readable in XINFO."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _check_name(what: str, value: str) -> str:
    if not value or len(value) > 200 or not set(value) <= _NAME_CHARS:
        raise InvalidDataError(
            f"{what} must be 1-200 letters, digits or - _ . : characters", column=what
        )
    return value


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation of the current task that a client library swallowed."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError


class Delivery(Generic[E]):
    """One event read from a stream; pending in its group until ``ack()``."""

    __slots__ = ("_consumer", "entry_id", "event", "stream")

    def __init__(self, consumer: Consumer[E], stream: str, entry_id: str, event: E) -> None:
        self._consumer = consumer
        self.stream = stream
        self.entry_id = entry_id
        self.event = event

    async def ack(self) -> bool:
        """Acknowledge: the group will not deliver it again.

        False when Redis could not be told (it is then delivered again after
        the idle time, with the same ``event_id``); never raises for an outage.
        """
        return await self._consumer._ack(self.stream, self.entry_id)

    def __repr__(self) -> str:
        return f"Delivery({type(self.event).__name__}, {self.stream!r}, {self.entry_id!r})"


class Consumer(Generic[E]):
    """Deliveries of ``event_types`` for ``consumer`` of ``group`` (see module doc)."""

    def __init__(
        self,
        bus: EventBus,
        group: str,
        event_types: tuple[type[E], ...],
        *,
        consumer: str | None,
        batch: int,
        block: float,
        idle: float,
        history: bool,
        reconnect_delay: float,
    ) -> None:
        if not event_types:
            raise InvalidDataError("consume needs at least one event type")
        if not 1 <= batch <= 10_000:
            raise InvalidDataError("batch must be between 1 and 10000", column="batch")
        if not 0 < block <= 60 or not 0 < idle <= 86_400 or not 0 < reconnect_delay <= 60:
            raise InvalidDataError("block, idle and reconnect_delay must be positive seconds")
        self._bus = bus
        self.group = _check_name("group", group)
        self.name = _check_name(
            "consumer", default_consumer_name() if consumer is None else consumer
        )
        self._types = {bus.stream_for(t): t for t in event_types}
        self._streams = list(self._types)
        self.batch, self.block, self.idle = batch, block, idle
        self._start_id = "0" if history else "$"
        self._delay = reconnect_delay
        self._claim_every = max(idle / 2, 0.05)
        self._next_claim = 0.0  # claim abandoned work on start
        self._ready = False
        self._closed = False
        self._failures = 0  # consecutive failures: the backoff grows with them
        self._buffer: collections.deque[Delivery[E]] = collections.deque()
        #: Counters: deliveries handed out, of which claimed from others; acks;
        #: malformed entries dropped; pending entries retention trimmed away; reconnects.
        self.delivered = self.claimed = self.acked = 0
        self.dropped = self.trimmed = self.reconnects = 0

    @property
    def streams(self) -> list[str]:
        """The stream keys this consumer reads."""
        return list(self._streams)

    async def start(self) -> Consumer[E]:
        """Create the group on every stream now (retrying until Redis answers); returns self."""
        while not self._ready and not self._closed:
            try:
                await guarded(self._prepare())
            except CacheUnavailable as exc:
                await self._backoff(exc, "consumer group")
        return self

    async def _prepare(self) -> None:
        for stream in self._streams:
            await self._bus.backend.stream_group(stream, self.group, self._start_id)
        self._ready = True

    async def _backoff(self, exc: CacheUnavailable, doing: str) -> None:
        self._bus.breaker.failure(exc, doing)
        self._ready = False  # a restarted Redis may have lost the group: create it again
        self.reconnects += 1
        delay = min(_MAX_BACKOFF, self._delay * 2 ** min(self._failures, 10))
        self._failures += 1
        await asyncio.sleep(delay)

    def __aiter__(self) -> Consumer[E]:
        return self

    async def __anext__(self) -> Delivery[E]:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            try:
                # guarded: a cancellation of the caller always ends this loop, even
                # one that redis-py or a racing timeout swallowed inside the step
                messages = await guarded(self._step())
            except CacheUnavailable as exc:
                _raise_if_cancelled()  # redis-py may turn a cancellation into a lost connection
                if self._closed:
                    raise StopAsyncIteration from None
                await self._backoff(exc, "consume")
                continue
            if self._failures:
                self._failures = 0
                self._bus.breaker.success()
            await self._accept(messages)
        self.delivered += 1
        return self._buffer.popleft()

    async def _step(self) -> list[StreamMessage]:
        """One round trip: create the groups if due, then claim or read."""
        if not self._ready:
            await self._prepare()
        return await self._fetch()

    async def _fetch(self) -> list[StreamMessage]:
        """Claimed entries when a claim round is due and finds some, else new ones."""
        if time.monotonic() >= self._next_claim:
            claimed = await self._claim()
            if claimed:
                return claimed
        backend = self._bus.backend
        block = min(self.block, max(0.01, self._next_claim - time.monotonic()))
        return await backend.stream_read(self.group, self.name, self._streams, self.batch, block)

    async def _claim(self) -> list[StreamMessage]:
        """XAUTOCLAIM each stream (up to ``batch`` each); again at once if more are due."""
        backend = self._bus.backend
        out: list[StreamMessage] = []
        more = False
        for stream in self._streams:
            cursor, claimed, deleted = await backend.stream_claim(
                stream, self.group, self.name, self.idle, self.batch, "0-0"
            )
            out.extend(claimed)
            more = more or cursor != "0-0"
            if deleted:
                self.trimmed += len(deleted)
                log.warning(
                    "%d pending events were trimmed by retention before being acknowledged",
                    len(deleted),
                    extra={"stream": stream, "group": self.group},
                )
        self.claimed += len(out)
        if out:
            log.info(
                "claimed %d events abandoned for over %.1fs",
                len(out),
                self.idle,
                extra={"group": self.group, "consumer": self.name},
            )
        self._next_claim = time.monotonic() + (0.0 if more else self._claim_every)
        return out

    async def _accept(self, messages: list[StreamMessage]) -> None:
        """Parse entries into deliveries; malformed ones are logged, acknowledged and dropped."""
        for message in messages:
            event_type = self._types.get(message.stream)
            data = message.fields.get("data")
            event: E | None = None
            if event_type is not None and data is not None:
                try:
                    event = event_type.model_validate_json(data)
                except ValidationError:
                    event = None
            if event is None:
                self.dropped += 1
                log.warning(
                    "dropped a malformed stream entry",
                    extra={"stream": message.stream, "entry_id": message.entry_id},
                )
                await self._ack(message.stream, message.entry_id)
                continue
            self._buffer.append(Delivery(self, message.stream, message.entry_id, event))

    async def _ack(self, stream: str, entry_id: str) -> bool:
        try:
            # not guarded (a task per ack would cost ~80 us): one call, no loop to go on with
            await self._bus.backend.stream_ack(stream, self.group, [entry_id])
        except CacheUnavailable as exc:
            _raise_if_cancelled()
            self._bus.breaker.failure(exc, "ack")
            return False
        self.acked += 1
        return True

    async def aclose(self) -> None:
        """Stop: iteration ends (after a read in flight returns, at most ``block`` s).

        Deliveries handed out and not acknowledged stay pending in the group
        and go to another consumer after ``idle`` seconds.
        """
        self._closed = True
        self._buffer.clear()
        self._bus.forget(self)

    async def __aenter__(self) -> Consumer[E]:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
