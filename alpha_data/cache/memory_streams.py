"""In-process streams for the memory:// backend: append-only logs with Redis-style ids.

``memory://`` is one process only, so its streams are too: entries are kept
in a list per stream (trimmed to ``maxlen``) with ids ``<ms>-<n>`` that grow
like Redis stream ids. They let ``EventBus.deliver`` (and the outbox on top
of it) run unchanged in development and unit tests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

__all__ = ["MemoryStreams", "StreamRecord"]

#: (entry id, fields) as stored.
StreamRecord = tuple[str, tuple[tuple[str, bytes], ...]]


class MemoryStreams:
    """Streams by name; each a list of (id, fields), oldest first."""

    def __init__(self) -> None:
        self.streams: dict[str, list[StreamRecord]] = {}
        self._last = (0, 0)

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
        return entry_id

    def clear(self) -> None:
        """Forget every stream."""
        self.streams.clear()
