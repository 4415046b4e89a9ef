"""Single-flight: concurrent misses of one key (at one set of tag tokens) share a query.

The first caller leads: it queries PostgreSQL and publishes the encoded
entry body. Followers wait for it and build their own ORM objects from the
body, in their own sessions. The flight is keyed by the tokens the caller
read too, so a reader that started after an invalidation never joins a
flight that started before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

__all__ = ["Flights"]


class Flights:
    """The queries in flight in this process, by (key, tokens)."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[bytes | None]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def find(self, key: Hashable) -> asyncio.Future[bytes | None] | None:
        """The flight to follow, if one is running."""
        return self._running.get(key)

    def lead(self, key: Hashable) -> asyncio.Future[bytes | None]:
        """Start a flight; the leader must ``land`` it whatever happens."""
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        return future

    def land(self, key: Hashable, future: asyncio.Future[bytes | None], body: bytes | None) -> None:
        """End a flight with the entry body (None: followers query themselves)."""
        if not future.done():
            future.set_result(body)
        if self._running.get(key) is future:
            del self._running[key]
