"""Cache backends: Redis (redis-py asyncio) and an in-process memory store.

Both speak bytes and never raise to callers on an outage: a failing call is
reported to the caller as ``CacheUnavailable`` so that the cache layer above
can fail open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, cast

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from alpha_data.settings import Settings

__all__ = [
    "CacheBackend",
    "CacheUnavailable",
    "MemoryBackend",
    "RedisBackend",
    "make_cache_backend",
]


class CacheUnavailable(Exception):
    """The cache backend could not answer (down, stalled or erroring)."""


class CacheBackend(Protocol):
    """What the cache and the event bus need from a key-value store with pub/sub."""

    client: Any

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
    async def delete_and_incr(self, delete: Sequence[str], incr: Sequence[str]) -> None: ...
    async def publish(self, channel: str, message: bytes) -> None: ...
    def subscribe(self, channels: Sequence[str]) -> AsyncIterator[tuple[str, bytes]]: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class RedisBackend:
    """Redis through redis-py asyncio, with short socket timeouts so a stall fails fast."""

    def __init__(self, url: str, *, socket_timeout: float) -> None:
        self.url = url
        self.client: redis_asyncio.Redis = redis_asyncio.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=30,
        )

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            if len(keys) == 1:
                return [cast("bytes | None", await self.client.get(keys[0]))]
            return cast("list[bytes | None]", list(await self.client.mget(keys)))
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise CacheUnavailable(type(exc).__name__) from None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self.client.set(key, value, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise CacheUnavailable(type(exc).__name__) from None

    async def delete_and_incr(self, delete: Sequence[str], incr: Sequence[str]) -> None:
        """Delete keys and bump tag counters in one round trip (a MULTI pipeline)."""
        if not delete and not incr:
            return
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                if delete:
                    pipe.delete(*delete)
                for key in incr:
                    pipe.incr(key)
                await pipe.execute()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise CacheUnavailable(type(exc).__name__) from None

    async def publish(self, channel: str, message: bytes) -> None:
        try:
            await self.client.publish(channel, message)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise CacheUnavailable(type(exc).__name__) from None

    async def subscribe(self, channels: Sequence[str]) -> AsyncIterator[tuple[str, bytes]]:
        """Yield (channel, data) forever; raises CacheUnavailable when the link drops."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                channel = message["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                yield name, message["data"]
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise CacheUnavailable(type(exc).__name__) from None
        finally:
            with contextlib.suppress(Exception):  # the link may already be gone
                await cast(Any, pubsub).aclose()

    async def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        try:
            async for key in self.client.scan_iter(match=f"{prefix}*", count=500):
                deleted += int(await self.client.unlink(key))
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise CacheUnavailable(type(exc).__name__) from None
        return deleted

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError, asyncio.TimeoutError):
            return False

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await self.client.aclose()


class MemoryBackend:
    """In-process backend with the same semantics (TTL, counters, pub/sub) for dev and tests."""

    def __init__(self) -> None:
        self.client: Any = None
        self._data: dict[str, tuple[bytes, float]] = {}
        self._subscribers: dict[str, list[asyncio.Queue[tuple[str, bytes]]]] = {}

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires < time.monotonic():
            del self._data[key]
            return None
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._live(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._data[key] = (value, time.monotonic() + ttl)

    async def delete_and_incr(self, delete: Sequence[str], incr: Sequence[str]) -> None:
        for key in delete:
            self._data.pop(key, None)
        for key in incr:
            current = int(self._live(key) or b"0")
            self._data[key] = (str(current + 1).encode(), float("inf"))

    async def publish(self, channel: str, message: bytes) -> None:
        for queue in self._subscribers.get(channel, []):
            queue.put_nowait((channel, message))

    async def subscribe(self, channels: Sequence[str]) -> AsyncIterator[tuple[str, bytes]]:
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        for channel in channels:
            self._subscribers.setdefault(channel, []).append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            for channel in channels:
                self._subscribers[channel].remove(queue)

    async def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self._data if k.startswith(prefix)]
        for key in keys:
            del self._data[key]
        return len(keys)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


def make_cache_backend(settings: Settings) -> RedisBackend | MemoryBackend:
    """The backend named by ``settings.redis_url`` (``memory://`` → in-process)."""
    if settings.redis_url.startswith("memory://"):
        return MemoryBackend()
    return RedisBackend(settings.redis_url, socket_timeout=settings.redis_socket_timeout)
