"""What flows over a backend besides cache entries: stream entries, messages, pub/sub links.

The event bus appends ``StreamEntry`` values (and publishes them), its
consumers read ``StreamMessage`` values through consumer groups, and live
subscriptions are ``PubSubLink`` objects. Every backend call, cache or
event, reports any failure (down, stalled, erroring) as ``CacheUnavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

__all__ = ["CacheUnavailable", "PubSubLink", "StreamEntry", "StreamMessage"]


class CacheUnavailable(Exception):
    """The backend could not answer (down, stalled or erroring)."""


class StreamEntry(NamedTuple):
    """One event to deliver: appended to ``stream`` and published on ``channel``."""

    stream: str
    fields: Sequence[tuple[str, bytes]]
    channel: str
    message: bytes


class StreamMessage(NamedTuple):
    """One entry read from a stream through a consumer group."""

    stream: str
    entry_id: str
    fields: dict[str, bytes]


class PubSubLink(Protocol):
    """One live subscription: messages in order until the link drops."""

    async def receive(self, timeout: float) -> tuple[str, bytes] | None:
        """The next (channel, data), None after ``timeout`` s; CacheUnavailable when lost."""
        ...

    async def close(self) -> None:
        """Unsubscribe and release the connection (never raises)."""
        ...
