"""In-process streams for the memory:// backend: logs with Redis-style ids and consumer groups.

``memory://`` is one process only, so its streams are too. They follow the
Redis semantics the event consumer relies on: entries ``<ms>-<n>`` in a list
per stream (trimmed to ``maxlen``); a group has a last-delivered id and a
pending list (entry → consumer, delivery time) that ``ack`` empties and
``claim`` hands to another consumer after an idle time. Enough for
development and unit tests of consumers; nothing survives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from alpha_data.redisio.protocol import CacheUnavailable, StreamMessage

__all__ = ["MemoryStreams", "StreamRecord"]

#: (entry id, fields) as stored.
StreamRecord = tuple[str, tuple[tuple[str, bytes], ...]]


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


@dataclass
class _Group:
    last: tuple[int, int]
    pending: dict[str, tuple[str, float]] = field(default_factory=dict)


class MemoryStreams:
    """Streams by name (each a list of (id, fields), oldest first) and their groups."""

    def __init__(self) -> None:
        self.streams: dict[str, list[StreamRecord]] = {}
        self.groups: dict[tuple[str, str], _Group] = {}
        self._last = (0, 0)
        self._changed: asyncio.Event | None = None

    def _next_id(self) -> str:
        ms = int(time.time() * 1000)
        last_ms, last_n = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_n + 1)
        return f"{self._last[0]}-{self._last[1]}"

    def append(self, stream: str, fields: Sequence[tuple[str, bytes]], maxlen: int) -> str:
        """Add an entry (trimming the oldest beyond ``maxlen``, 0 = never); its id."""
        entry_id = self._next_id()
        entries = self.streams.setdefault(stream, [])
        entries.append((entry_id, tuple(fields)))
        if maxlen > 0 and len(entries) > maxlen:
            del entries[: len(entries) - maxlen]
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return entry_id

    def create_group(self, stream: str, group: str, start: str) -> None:
        """Create the group (and stream) unless it exists; ``start`` is "0" or "$"."""
        entries = self.streams.setdefault(stream, [])
        if (stream, group) not in self.groups:
            last = _key(entries[-1][0]) if start == "$" and entries else (0, 0)
            self.groups[(stream, group)] = _Group(last=last)

    def _group(self, stream: str, group: str) -> _Group:
        found = self.groups.get((stream, group))
        if found is None:
            raise CacheUnavailable(f"NOGROUP no group {group!r} on this stream")
        return found

    def _take_new(
        self, group: str, consumer: str, streams: Sequence[str], count: int
    ) -> list[StreamMessage]:
        out: list[StreamMessage] = []
        now = time.monotonic()
        for stream in streams:
            state = self._group(stream, group)
            fresh = [e for e in self.streams.get(stream, []) if _key(e[0]) > state.last][:count]
            for entry_id, fields in fresh:
                state.pending[entry_id] = (consumer, now)
                out.append(StreamMessage(stream, entry_id, dict(fields)))
            if fresh:
                state.last = _key(fresh[-1][0])
        return out

    async def read(
        self, group: str, consumer: str, streams: Sequence[str], count: int, block: float
    ) -> list[StreamMessage]:
        """New entries for ``consumer`` (pending until acked), waiting up to ``block`` s."""
        deadline = time.monotonic() + block
        while True:
            got = self._take_new(group, consumer, streams, count)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> int:
        """Drop entries from the pending list; how many were there."""
        pending = self._group(stream, group).pending
        return sum(pending.pop(entry_id, None) is not None for entry_id in entry_ids)

    def claim(
        self, stream: str, group: str, consumer: str, min_idle: float, count: int, start: str
    ) -> tuple[str, list[StreamMessage], list[str]]:
        """Entries pending longer than ``min_idle`` s from ``start`` on, now ``consumer``'s."""
        state = self._group(stream, group)
        now = time.monotonic()
        stored = dict(self.streams.get(stream, []))
        due = sorted(
            (
                i
                for i, (_, at) in state.pending.items()
                if now - at >= min_idle and _key(i) >= _key(start)
            ),
            key=_key,
        )
        claimed: list[StreamMessage] = []
        deleted: list[str] = []
        for entry_id in due[:count]:
            fields = stored.get(entry_id)
            if fields is None:  # trimmed while pending
                del state.pending[entry_id]
                deleted.append(entry_id)
                continue
            state.pending[entry_id] = (consumer, now)
            claimed.append(StreamMessage(stream, entry_id, dict(fields)))
        cursor = due[count] if len(due) > count else "0-0"
        return cursor, claimed, deleted

    def clear(self) -> None:
        """Forget every stream and group."""
        self.streams.clear()
        self.groups.clear()
