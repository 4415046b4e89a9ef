"""The in-process backend (``redis_url = memory://``): Redis semantics without Redis.

Same entry format, tag tokens (with their LSNs and the fence), conditional
store, TTLs, pub/sub and streams with consumer groups (``memory_streams``)
as the Redis backend, for
development and unit tests; one process only. It holds
at most ``max_items`` keys: expired ones go first, then the oldest (dropping
a tag only turns the entries under it into misses).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from alpha_data.cache.backends import (
    MOVED,
    NO_FENCE,
    STORED,
    UNCOVERED,
    Store,
    lsn_text,
    new_nonce,
    token_lsn,
    valid_lsn,
)
from alpha_data.cache.memory_streams import MemoryStreams
from alpha_data.redisio.protocol import StreamEntry, StreamMessage

__all__ = ["MemoryBackend"]


class _MemoryLink:
    def __init__(self, backend: MemoryBackend, channels: Sequence[str]) -> None:
        self.backend = backend
        self.channels = list(channels)
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def receive(self, timeout: float) -> tuple[str, bytes] | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        for channel in self.channels:
            links = self.backend.subscribers.get(channel, [])
            if self in links:
                links.remove(self)


class MemoryBackend:
    """A dict with expiry times, tag tokens and in-process pub/sub."""

    def __init__(self, *, max_items: int = 100_000) -> None:
        self.client: Any = None
        self.max_items = max_items
        self.data: dict[str, tuple[bytes, float]] = {}
        self.subscribers: dict[str, list[_MemoryLink]] = {}
        self.streams = MemoryStreams()

    def _get(self, key: str) -> bytes | None:
        item = self.data.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self.data[key]
            return None
        return item[0]

    def _set(self, key: str, value: bytes, ttl: float) -> None:
        self.data.pop(key, None)
        self.data[key] = (value, time.monotonic() + ttl)
        if len(self.data) > self.max_items:
            self._evict()

    def _evict(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, expires) in self.data.items() if expires <= now]:
            del self.data[key]
        while len(self.data) > self.max_items:
            del self.data[next(iter(self.data))]

    async def fetch(self, key: str, tags: Sequence[str]) -> bytes | list[bytes]:
        """The entry if its tokens are current, else the current tokens."""
        tokens = [self._get(t) or b"" for t in tags]
        entry = self._get(key)
        if entry is not None and entry.startswith(b'["' + b",".join(tokens) + b'",'):
            return entry
        return tokens

    async def store(self, stores: Sequence[Store]) -> list[int]:
        """Store each entry whose tags did not move since ``seen``."""
        return [self._store(s) for s in stores]

    def _store(self, s: Store) -> int:
        replica = None if s.replica_lsn is None else lsn_text(s.replica_lsn)
        current: list[bytes] = []
        for tag, was, new in zip(s.tags, s.seen, s.fresh, strict=True):
            token = self._get(tag)
            if token is None:
                if was != b"":
                    return MOVED
                token = new.encode()
            elif token != was and not (was == b"" and token.startswith(b"i")):
                return MOVED
            refused = replica is not None and self._uncovered(token, s.fence, replica)
            if refused:
                return refused
            self._set(tag, token, s.tag_ttl)
            current.append(token)
        self._set(s.key, b'["' + b",".join(current) + b'",' + s.body, s.ttl)
        return STORED

    def _uncovered(self, token: bytes, fence: str, replica: str) -> int:
        """0 when a replica at ``replica`` had replayed every commit ``token`` may stand
        for; else why not (UNCOVERED: it is behind; NO_FENCE: no trusted fence)."""
        bound = token_lsn(token) or self._trusted(fence)
        if bound is None:
            return NO_FENCE
        return 0 if bound <= replica else UNCOVERED

    def _trusted(self, fence: str) -> str | None:
        """The fence's LSN once trusted (confirmed), else None."""
        value = self._get(fence)
        return valid_lsn(value.decode()) if value is not None else None

    async def invalidate(
        self,
        keys: Sequence[str],
        tags: Sequence[str],
        fresh: Sequence[str],
        tag_ttl: float,
        *,
        fence: str,
        lsn: int | None,
        confirm: str = "",
    ) -> str:
        """Delete keys, move the fence and set fresh tokens with their LSNs."""
        if not keys and not tags and lsn is None:
            return confirm
        for key in keys:
            self.data.pop(key, None)
        trusted = pending = None
        if lsn is None:
            self.data.pop(fence, None)
        else:
            refresh = not keys and not tags
            trusted, pending = self._raise_fence(fence, lsn_text(lsn), confirm, refresh)
        for tag, token in zip(tags, fresh, strict=True):
            bound = None
            if lsn is not None:
                known = token_lsn(self._get(tag))
                bound = max(known, lsn_text(lsn)) if known is not None else trusted
            self._set(tag, (token if bound is None else f"{token}@{bound}").encode(), tag_ttl)
        return pending or ""

    def _raise_fence(
        self, fence: str, lsn: str, confirm: str, refresh: bool
    ) -> tuple[str | None, str | None]:
        """Raise the fence to ``lsn``: (its LSN if trusted, else None; its nonce if not).

        A ``refresh`` (no tags) leaves a trusted fence as it is.
        """
        value = self._get(fence)
        known, slash, nonce = value.decode().partition("/") if value is not None else ("", "", "")
        top = valid_lsn(known) if nonce or not slash else None
        if top is None:  # missing (or unreadable): a new fence, not trusted yet
            top, nonce = lsn, new_nonce()
        elif nonce or not refresh:
            top = max(top, lsn)
        if not nonce or nonce == confirm:
            self._set(fence, top.encode(), math.inf)
            return top, None
        self._set(fence, f"{top}/{nonce}".encode(), math.inf)
        return None, nonce

    async def publish(self, channel: str, message: bytes) -> None:
        """Deliver to every link subscribed to ``channel``."""
        for link in list(self.subscribers.get(channel, ())):
            link.queue.put_nowait((channel, message))

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Deliver each ``(channel, message)`` in order."""
        for channel, message in messages:
            await self.publish(channel, message)

    async def deliver(self, entries: Sequence[StreamEntry], maxlen: int) -> None:
        """Append each entry to its in-process stream and publish it, in order."""
        for entry in entries:
            self.streams.append(entry.stream, entry.fields, maxlen)
            await self.publish(entry.channel, entry.message)

    async def stream_group(self, stream: str, group: str, start: str) -> None:
        """Create the group on the in-process stream unless it exists."""
        self.streams.create_group(stream, group, start)

    async def stream_read(
        self, group: str, consumer: str, streams: Sequence[str], count: int, block: float
    ) -> list[StreamMessage]:
        """New entries for ``consumer`` of ``group``, waiting up to ``block`` s."""
        return await self.streams.read(group, consumer, streams, count, block)

    async def stream_ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> int:
        """Acknowledge entries."""
        return self.streams.ack(stream, group, entry_ids)

    async def stream_claim(
        self, stream: str, group: str, consumer: str, min_idle: float, count: int, start: str
    ) -> tuple[str, list[StreamMessage], list[str]]:
        """Take over entries pending longer than ``min_idle`` s."""
        return self.streams.claim(stream, group, consumer, min_idle, count, start)

    async def subscribe(self, channels: Sequence[str]) -> _MemoryLink:
        """A link that receives what is published on ``channels`` from now on."""
        link = _MemoryLink(self, channels)
        for channel in channels:
            self.subscribers.setdefault(channel, []).append(link)
        return link

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``."""
        keys = [k for k in self.data if k.startswith(prefix)]
        for key in keys:
            del self.data[key]
        return len(keys)

    async def ping(self) -> bool:
        """Always reachable."""
        return True

    async def close(self) -> None:
        """Forget everything."""
        self.data.clear()
        self.streams.clear()
