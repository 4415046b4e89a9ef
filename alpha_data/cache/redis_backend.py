"""The Redis backend: an MGET or a Lua script per operation, one round trip each.

The scripts and their arguments are in ``alpha_data.cache.scripts``.

* fetch: MGET the entry and its tags; the entry is valid only if it starts
  with the current tokens, otherwise the tokens are what the caller needs
  (a plain read: no script on the hot path, fine on replicas and during
  ``CLIENT PAUSE WRITE``).
* store: check every tag still holds the token seen before the query (a
  tag that had none may have been given one by another reader since: tokens
  given that way start with ``i``, tokens of invalidations with ``b``; a
  tag still without one gets a fresh ``i`` token) and, for a result read
  from a replica, that the replica had replayed past each tag's LSN; then
  SET the entry, otherwise store nothing.
* invalidate: a Lua script that DELs entity keys, SETs fresh tokens on the
  tags (with the LSN each tag must be covered by) and moves the fence.

The client fails fast: short socket timeouts from Settings and no retries
(the cache front decides what an outage means).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as redis_asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from alpha_data.cache.backends import Store
from alpha_data.cache.scripts import INVALIDATE, STORE, invalidate_args, ms, store_args
from alpha_data.cancellation import deadline
from alpha_data.redisio.client import redis_client
from alpha_data.redisio.protocol import CacheUnavailable, StreamEntry, StreamMessage

__all__ = ["RedisBackend"]

# RedisClusterException (e.g. no reachable node) is not a RedisError.
_FAILURES = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


class _RedisLink:
    """A subscribed redis-py PubSub."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub

    async def receive(self, timeout: float) -> tuple[str, bytes] | None:
        try:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None
        if message is None or message.get("type") != "message":
            return None
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        return name, message["data"]

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # the link may already be gone
            await cast(Any, self.pubsub).aclose()


class RedisBackend:
    """Redis through redis-py asyncio: short timeouts, no retries, one round trip per call."""

    def __init__(self, url: str, *, socket_timeout: float, client_name: str | None = None) -> None:
        self.url = url
        self.socket_timeout = socket_timeout
        self.client_name = client_name
        self.client: redis_asyncio.Redis = redis_client(  # redis://, +sentinel://, +cluster://
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
            client_name=client_name,
        )
        self._command: Any = self.client.execute_command
        self._blocking: redis_asyncio.Redis | None = None  # XREADGROUP BLOCK outlives timeouts

    async def fetch(self, key: str, tags: Sequence[str]) -> bytes | list[bytes]:
        """One MGET: the entry if its head holds the current tokens, else the tokens."""
        try:
            got: list[bytes | None] = await self._command("MGET", key, *tags)
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None
        entry = got[0]
        tokens = [t or b"" for t in got[1:]]
        if entry is not None and entry.startswith(b'["' + b",".join(tokens) + b'",'):
            return entry
        return tokens

    async def store(self, stores: Sequence[Store]) -> list[int]:
        """STORE per entry (by SHA), pipelined in one round trip: SET it if no tag moved."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for s in stores:
                    pipe.execute_command("EVALSHA", STORE.sha, *store_args(s))
                results = list(await pipe.execute(raise_on_error=False))
            for i, result in enumerate(results):
                if isinstance(result, NoScriptError):  # scripts are gone after a restart
                    results[i] = await STORE.run(self._command, *store_args(stores[i]))
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None
        for result in results:
            if isinstance(result, Exception):
                raise CacheUnavailable(f"store script failed: {result}")
        return [int(r) for r in results]

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
        """One INVALIDATE script: DEL ``keys``, fresh tokens on ``tags``, the fence moved."""
        if not keys and not tags and lsn is None:
            return confirm
        args = invalidate_args(keys, tags, fresh, tag_ttl, fence=fence, lsn=lsn, confirm=confirm)
        try:
            pending = await INVALIDATE.run(self._command, *args)
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None
        return pending.decode() if isinstance(pending, bytes) else str(pending or "")

    async def publish(self, channel: str, message: bytes) -> None:
        """PUBLISH."""
        try:
            await self.client.publish(channel, message)
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """PUBLISH each pair, pipelined in one round trip (order kept)."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, message in messages:
                    pipe.publish(channel, message)
                await pipe.execute()
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None

    async def deliver(self, entries: Sequence[StreamEntry], maxlen: int) -> None:
        """XADD (``MAXLEN ~ maxlen``) + PUBLISH per entry in one MULTI/EXEC round trip."""
        if not entries:
            return
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for entry in entries:
                    trim = ("MAXLEN", "~", maxlen) if maxlen > 0 else ()
                    fields = [part for pair in entry.fields for part in pair]
                    pipe.execute_command("XADD", entry.stream, *trim, "*", *fields)
                    pipe.publish(entry.channel, entry.message)
                results = await pipe.execute(raise_on_error=False)
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None
        for result in results:
            if isinstance(result, Exception):
                raise CacheUnavailable(f"deliver failed: {type(result).__name__}")

    def _blocking_client(self) -> redis_asyncio.Redis:
        """A second client for blocking reads: no socket timeout (each read is bounded)."""
        if self._blocking is None:
            self._blocking = redis_client(
                self.url,
                socket_timeout=None,
                socket_connect_timeout=self.socket_timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=30,
                client_name=self.client_name,
            )
        return self._blocking

    async def stream_group(self, stream: str, group: str, start: str) -> None:
        """XGROUP CREATE ... MKSTREAM; an existing group (BUSYGROUP) is fine."""
        try:
            await self._command("XGROUP", "CREATE", stream, group, start, "MKSTREAM")
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):  # the reply's error code
                raise CacheUnavailable(f"XGROUP CREATE failed: {exc}") from None
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None

    async def stream_read(
        self, group: str, consumer: str, streams: Sequence[str], count: int, block: float
    ) -> list[StreamMessage]:
        """XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS s... > ... on the blocking client."""
        command: Any = self._blocking_client().execute_command
        args = ("COUNT", count, "BLOCK", ms(block), "STREAMS", *streams, *[">"] * len(streams))
        try:  # deadline, not wait_for: before 3.12 that can swallow the caller's cancel
            async with deadline(block + self.socket_timeout + 1.0):
                reply = await command("XREADGROUP", "GROUP", group, consumer, *args)
        except _FAILURES as exc:
            raise CacheUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from None
        out: list[StreamMessage] = []
        for stream, entries in reply or ():
            name = stream.decode() if isinstance(stream, bytes) else str(stream)
            out.extend(_messages(name, entries))
        return out

    async def stream_ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> int:
        """XACK."""
        if not entry_ids:
            return 0
        try:
            return int(await self._command("XACK", stream, group, *entry_ids))
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None

    async def stream_claim(
        self, stream: str, group: str, consumer: str, min_idle: float, count: int, start: str
    ) -> tuple[str, list[StreamMessage], list[str]]:
        """XAUTOCLAIM stream group consumer min-idle-ms start COUNT n."""
        idle = max(0, int(min_idle * 1000))
        try:
            reply = await self._command(
                "XAUTOCLAIM", stream, group, consumer, idle, start, "COUNT", count
            )
        except _FAILURES as exc:
            raise CacheUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from None
        cursor = _text(reply[0])
        deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
        return cursor, _messages(stream, reply[1]), deleted

    async def subscribe(self, channels: Sequence[str]) -> _RedisLink:
        """SUBSCRIBE on a connection of its own and wait for every confirmation."""
        pubsub = self.client.pubsub()
        link = _RedisLink(pubsub)
        try:
            await pubsub.subscribe(*channels)
            waiting = set(channels)
            deadline = asyncio.get_running_loop().time() + max(1.0, 4 * self.socket_timeout)
            while waiting:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise asyncio.TimeoutError("no subscribe confirmation")
                message = await pubsub.get_message(timeout=left)
                if message is not None and message.get("type") == "subscribe":
                    channel = message["channel"]
                    waiting.discard(channel.decode() if isinstance(channel, bytes) else channel)
        except _FAILURES as exc:
            await link.close()
            raise CacheUnavailable(type(exc).__name__) from None
        return link

    async def delete_prefix(self, prefix: str) -> int:
        """SCAN + UNLINK everything under ``prefix``."""
        deleted = 0
        try:
            batch: list[bytes] = []
            async for key in self.client.scan_iter(match=f"{_glob_escape(prefix)}*", count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(await self.client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(await self.client.unlink(*batch))
        except _FAILURES as exc:
            raise CacheUnavailable(type(exc).__name__) from None
        return deleted

    async def ping(self) -> bool:
        """PING (False on any failure)."""
        try:
            return bool(await self.client.ping())
        except _FAILURES:
            return False

    async def close(self) -> None:
        """Close the connection pool."""
        with contextlib.suppress(*_FAILURES):
            await cast(Any, self.client).aclose()
        blocking, self._blocking = self._blocking, None
        if blocking is not None:
            with contextlib.suppress(*_FAILURES):
                await cast(Any, blocking).aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _messages(stream: str, entries: Any) -> list[StreamMessage]:
    """Parsed (id, fields) pairs as StreamMessages (entries trimmed meanwhile have no fields)."""
    out: list[StreamMessage] = []
    for entry_id, fields in entries or ():
        decoded = {_text(k): v for k, v in (fields or {}).items()}
        out.append(StreamMessage(stream, _text(entry_id), decoded))
    return out


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
