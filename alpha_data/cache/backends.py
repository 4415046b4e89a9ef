"""What the cache and the event bus need from a backend: the protocol and the factory.

A backend speaks bytes and tag tokens and raises ``CacheUnavailable`` for
any failure (down, stalled, erroring); the ``Cache`` front turns that into a
miss. Two implementations share the same semantics: ``RedisBackend`` and
the in-process ``MemoryBackend`` (``redis_url = memory://``).

Entries are stored as ``["<token>,<token>",<body>`` where ``body`` is the
rest of a JSON array: an entry is valid only while every tag it was stored
under still holds the token it had when the read began.

Tokens and the fence (docs/caching.md, "Replicas"): an invalidation's token
is ``b<random>.<i>``, followed by ``@<lsn>`` when its Database knows the
primary's WAL position after the commits it delivers (one with replicas):
the highest LSN that tag has known. A reader's first token of a tag is
``i<random>.<i>``. The *fence* key (``<prefix>:lsn``) bounds every tag
whose token carries no LSN: it holds the highest LSN of the invalidations
since it was created. A new fence (``<lsn>/<nonce>``) is trusted only when
an invalidation confirms its nonce: the confirming Database learned the
nonce from a reply, so the LSN it read afterwards is past every bump lost
before the fence existed. An invalidation without an LSN deletes it. A miss
served by a replica is stored only if the replica had replayed past every
tag's LSN (the token's own, else the trusted fence). LSNs are 16 hex digits.

The stream and pub/sub types and ``CacheUnavailable`` live in
``alpha_data.redisio.protocol`` (shared with the event bus) and are
re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from alpha_data.redisio.protocol import CacheUnavailable, PubSubLink, StreamEntry, StreamMessage
from alpha_data.settings import Settings

#: What ``CacheBackend.store`` answers for each entry.
MOVED, STORED, UNCOVERED, NO_FENCE = 0, 1, 2, 3

__all__ = [
    "MOVED",
    "NO_FENCE",
    "STORED",
    "UNCOVERED",
    "CacheBackend",
    "CacheUnavailable",
    "PubSubLink",
    "Store",
    "StreamEntry",
    "StreamMessage",
    "lsn_text",
    "make_cache_backend",
    "new_nonce",
    "new_tokens",
    "token_lsn",
    "valid_lsn",
]


class Store(NamedTuple):
    """One entry to store, valid only if every tag still holds its ``seen`` token.

    A tag that had no token gets ``fresh`` (when it still has none); one
    that got a token from another reader meanwhile (``i…``, not an
    invalidation's ``b…``) is accepted. ``replica_lsn`` (a result read from
    a replica): the replay LSN the replica had at least reached before the
    query; the entry is stored only if that covers every tag (module
    docstring), checked against the ``fence`` key.
    """

    key: str
    body: bytes
    ttl: float
    tags: Sequence[str]
    seen: Sequence[bytes]
    fresh: Sequence[str]
    tag_ttl: float
    fence: str = ""
    replica_lsn: int | None = None


class CacheBackend(Protocol):
    """A key-value store with tag tokens and pub/sub."""

    client: Any

    async def fetch(self, key: str, tags: Sequence[str]) -> bytes | list[bytes]:
        """The entry if its tokens are all current, else the current tokens (b'' = none).

        One round trip; ``tags`` is never empty.
        """
        ...

    async def store(self, stores: Sequence[Store]) -> list[int]:
        """Store each entry whose tags did not move (see Store), in one round trip.

        Per entry: ``STORED``; ``MOVED`` when a tag moved on (it may be
        stale); read from a replica that may miss a change its tags announce,
        ``UNCOVERED`` (it is behind a token's LSN or the fence) or
        ``NO_FENCE`` (a tag needs the fence and none is trusted).
        """
        ...

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
        """Delete ``keys`` and give each tag its ``fresh`` token, in one round trip.

        ``lsn``: the primary's WAL position read after the commits delivered
        (None: unknown). It raises the ``fence`` (creating it untrusted when
        missing) and each token carries the highest LSN its tag has known, or
        the trusted fence (module docstring). None deletes the fence and
        leaves the tokens without an LSN. ``confirm``: the nonce this caller
        got back last time, which trusts the fence if it is still the same.
        Returns the nonce of an untrusted fence ('' when trusted or none).
        With an LSN and no keys or tags, only the fence moves: created,
        raised while untrusted, confirmed; a trusted one stays as it is.
        """
        ...

    async def publish(self, channel: str, message: bytes) -> None:
        """Send ``message`` to the subscribers of ``channel``."""
        ...

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Send several ``(channel, message)`` pairs in one round trip, in order."""
        ...

    async def deliver(self, entries: Sequence[StreamEntry], maxlen: int) -> None:
        """Append each entry to its stream and publish it, in order, in one round trip.

        Streams are trimmed to about ``maxlen`` entries (0: never trimmed).
        Raises CacheUnavailable unless every entry was appended.
        """
        ...

    async def stream_group(self, stream: str, group: str, start: str) -> None:
        """Create consumer group ``group`` on ``stream`` (and the stream); no-op if it exists.

        ``start`` is ``"0"`` (the group sees every retained entry) or ``"$"`` (new ones).
        """
        ...

    async def stream_read(
        self, group: str, consumer: str, streams: Sequence[str], count: int, block: float
    ) -> list[StreamMessage]:
        """New entries for ``consumer`` of ``group`` (``XREADGROUP ... >``), waiting up to
        ``block`` s for one; they stay pending until acknowledged."""
        ...

    async def stream_ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> int:
        """Acknowledge entries (no longer pending); how many were pending."""
        ...

    async def stream_claim(
        self, stream: str, group: str, consumer: str, min_idle: float, count: int, start: str
    ) -> tuple[str, list[StreamMessage], list[str]]:
        """Take over up to ``count`` entries pending longer than ``min_idle`` s (XAUTOCLAIM).

        Returns the cursor to continue from (``"0-0"``: done), the claimed
        entries and the ids of pending entries that retention trimmed away.
        """
        ...

    async def subscribe(self, channels: Sequence[str]) -> PubSubLink:
        """A link subscribed (and confirmed) to ``channels``."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; how many were deleted."""
        ...

    async def ping(self) -> bool:
        """True when the store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def new_tokens(count: int, kind: str) -> list[str]:
    """``count`` tokens no tag has held before: ``kind`` (``i`` first token of a
    tag, ``b`` invalidation), 64 random bits and an index."""
    base = kind + os.urandom(8).hex()
    return [f"{base}.{i:x}" for i in range(count)]


def new_nonce() -> str:
    """A nonce for a new fence: 64 random bits."""
    return os.urandom(8).hex()


def lsn_text(lsn: int) -> str:
    """An LSN as 16 hex digits: strings of equal length compare like the numbers."""
    return f"{lsn:016x}"


_HEX = frozenset("0123456789abcdef")


def valid_lsn(text: str | None) -> str | None:
    """``text`` if it is an LSN as ``lsn_text`` writes it (16 hex digits), else None."""
    if text is not None and len(text) == 16 and all(c in _HEX for c in text):
        return text
    return None


def token_lsn(token: str | bytes | None) -> str | None:
    """The LSN a token carries (None: a reader's token, or no LSN known)."""
    if not token:
        return None
    text = token.decode() if isinstance(token, bytes) else token
    _, at, lsn = text.partition("@")
    return valid_lsn(lsn) if at else None


def make_cache_backend(settings: Settings) -> CacheBackend:
    """The backend named by ``settings.redis_url`` (``memory://`` → in-process)."""
    if settings.redis_url.startswith("memory://"):
        from alpha_data.cache.memory_backend import MemoryBackend

        return MemoryBackend()
    from alpha_data.cache.redis_backend import RedisBackend

    return RedisBackend(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout,
        client_name=f"alpha_data:{settings.cache_prefix}",
    )
