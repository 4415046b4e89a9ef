"""The Redis backend: an MGET or a Lua script per operation, one round trip each.

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
(the cache front decides what an outage means). Scripts are sent by SHA
and re-sent in full after a Redis restart (NOSCRIPT).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as redis_asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from alpha_data.cache.backends import Store, lsn_text, new_nonce
from alpha_data.cancellation import deadline
from alpha_data.redisio.client import redis_client
from alpha_data.redisio.protocol import CacheUnavailable, StreamEntry, StreamMessage

__all__ = ["INVALIDATE_SCRIPT", "STORE_SCRIPT", "RedisBackend"]

# RedisClusterException (e.g. no reachable node) is not a RedisError.
_FAILURES = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)

# An LSN as lsn_text writes it (16 hex digits), else false. LSNs are compared
# as strings: equal-length lowercase hex orders like the numbers (in the C
# collation and the usual UTF-8 ones Redis may run with).
_LSN_OF = """
local function lsn_of(v)
  if v and string.len(v) == 16 and not string.find(v, '[^0-9a-f]') then return v end
  return false
end
"""

# KEYS: entry, tags..., fence. ARGV: entry TTL, tag TTL, body, replica LSN ('':
# read on the primary), then the seen tokens and the fresh ones. Under a
# replica LSN every tag must be covered: by its token's LSN, else by the
# trusted fence ('<lsn>/<nonce>' is not trusted yet). Returns 1 stored, 0 a
# tag moved, 2 the replica is behind, 3 no trusted fence (backends.STORED...).
STORE_SCRIPT = (
    _LSN_OF
    + """
local n = #KEYS - 2
local replica = ARGV[4]
local fence = nil
local function uncovered(t)
  local at = string.find(t, '@', 1, true)
  local bound = at and lsn_of(string.sub(t, at + 1))
  if not bound then
    if fence == nil then fence = lsn_of(redis.call('GET', KEYS[n + 2])) end
    if not fence then return 3 end
    bound = fence
  end
  if bound <= replica then return false end
  return 2
end
local cur = {}
for i = 1, n do
  local t = redis.call('GET', KEYS[i + 1])
  local seen = ARGV[4 + i]
  local fresh = not t
  if fresh then
    if seen ~= '' then return 0 end
    t = ARGV[4 + n + i]
  elseif t ~= seen and not (seen == '' and string.sub(t, 1, 1) == 'i') then
    return 0
  end
  local refused = replica ~= '' and uncovered(t)
  if refused then return refused end
  if fresh then
    redis.call('SET', KEYS[i + 1], t, 'PX', ARGV[2])
  else
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[2])
  end
  cur[i] = t
end
redis.call('SET', KEYS[1], '["' .. table.concat(cur, ',') .. '",' .. ARGV[3], 'PX', ARGV[1])
return 1
"""
)

# KEYS: fence, tags..., entity keys to delete. ARGV: tag TTL, LSN ('': unknown),
# a nonce for a new fence, the nonce to confirm ('': none), the fresh tokens.
# Without an LSN the fence is deleted and the tokens carry none. With one, the
# fence rises to it (a missing one is created as '<lsn>/<nonce>', trusted once
# an invalidation confirms that nonce) and each token carries the highest LSN
# its tag has known: its old token's and this one, or else the trusted fence.
# With no tags or keys (a fence refresh) a trusted fence is left as it is.
# Returns the nonce of an untrusted fence ('' otherwise).
INVALIDATE_SCRIPT = (
    _LSN_OF
    + """
local n = #ARGV - 4
local lsn = ARGV[2]
local trusted = false
local pending = ''
if lsn == '' then
  redis.call('DEL', KEYS[1])
else
  local f = redis.call('GET', KEYS[1])
  local top, nonce = false, ''
  if f then
    local slash = string.find(f, '/', 1, true)
    if slash then
      nonce = string.sub(f, slash + 1)
      if nonce ~= '' then top = lsn_of(string.sub(f, 1, slash - 1)) end
    else
      top = lsn_of(f)
    end
  end
  if not top then
    top, nonce = lsn, ARGV[3]
  elseif top < lsn and (nonce ~= '' or #KEYS > 1) then
    top = lsn
  end
  if nonce == '' or nonce == ARGV[4] then
    redis.call('SET', KEYS[1], top)
    trusted = top
  else
    redis.call('SET', KEYS[1], top .. '/' .. nonce)
    pending = nonce
  end
end
for i = 1, n do
  local token = ARGV[4 + i]
  if lsn ~= '' then
    local bound = trusted
    local old = redis.call('GET', KEYS[1 + i])
    local at = old and string.find(old, '@', 1, true)
    local known = at and lsn_of(string.sub(old, at + 1))
    if known then
      bound = known
      if bound < lsn then bound = lsn end
    end
    if bound then token = token .. '@' .. bound end
  end
  redis.call('SET', KEYS[1 + i], token, 'PX', ARGV[1])
end
for i = n + 2, #KEYS do redis.call('DEL', KEYS[i]) end
return pending
"""
)


async def _execute(client: redis_asyncio.Redis, *command: Any) -> Any:
    execute: Any = client.execute_command
    return await execute(*command)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _store_args(s: Store) -> tuple[Any, ...]:
    """numkeys, KEYS and ARGV of STORE_SCRIPT for one entry."""
    return (
        2 + len(s.tags),
        s.key,
        *s.tags,
        s.fence,
        _ms(s.ttl),
        _ms(s.tag_ttl),
        s.body,
        "" if s.replica_lsn is None else lsn_text(s.replica_lsn),
        *s.seen,
        *s.fresh,
    )


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


_STORE_SHA = _sha(STORE_SCRIPT)
_INVALIDATE_SHA = _sha(INVALIDATE_SCRIPT)


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
        """EVALSHA per entry, pipelined in one round trip: SET it if no tag moved."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for s in stores:
                    pipe.execute_command("EVALSHA", _STORE_SHA, *_store_args(s))
                results = list(await pipe.execute(raise_on_error=False))
            for i, result in enumerate(results):
                if isinstance(result, NoScriptError):  # scripts are gone after a restart
                    results[i] = await _execute(
                        self.client, "EVAL", STORE_SCRIPT, *_store_args(stores[i])
                    )
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
        """One INVALIDATE_SCRIPT: DEL ``keys``, fresh tokens on ``tags``, the fence moved."""
        if not keys and not tags and lsn is None:
            return confirm
        args = (
            1 + len(tags) + len(keys),
            fence,
            *tags,
            *keys,
            _ms(tag_ttl),
            "" if lsn is None else lsn_text(lsn),
            new_nonce(),
            confirm,
            *fresh,
        )
        try:
            try:
                pending = await self._command("EVALSHA", _INVALIDATE_SHA, *args)
            except NoScriptError:  # scripts are gone after a restart
                pending = await self._command("EVAL", INVALIDATE_SCRIPT, *args)
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
        args = ("COUNT", count, "BLOCK", _ms(block), "STREAMS", *streams, *[">"] * len(streams))
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
