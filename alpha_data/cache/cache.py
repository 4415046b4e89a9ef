"""Cache: the fail-open front of a backend (key layout, TTLs, counters, background stores).

Every backend failure becomes "no cache" for the caller: reads go to
PostgreSQL, commits still commit. Invalidations that could not be delivered
are kept and delivered before this process reads from the cache again (see
``cache/delivery.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from alpha_data.cache.backends import (
    NO_FENCE,
    STORED,
    UNCOVERED,
    CacheBackend,
    Store,
    new_tokens,
)
from alpha_data.cache.delivery import InvalidationDelivery, WalPosition
from alpha_data.cache.flight import Flights
from alpha_data.health import ComponentHealth
from alpha_data.redisio.breaker import Breaker
from alpha_data.redisio.protocol import CacheUnavailable

__all__ = ["Cache", "CacheStats"]

log = logging.getLogger("alpha_data.cache")

#: Most entries sent in one pipelined round trip by the background store.
STORE_BATCH = 64
#: Refused replica stores refresh the fence at most this often (s).
FENCE_REFRESH = 1.0
#: Tags live at least this long (and twice the longest TTL): a tag that expires
#: only turns the entries under it into misses.
MIN_TAG_TTL = 86_400.0


@dataclass(frozen=True)
class CacheStats:
    """Counters since the Database was created.

    ``hits``/``misses`` count cached reads served from / not found in the
    cache; ``coalesced`` reads waited for another caller's query;
    ``bypassed`` reads went straight to PostgreSQL (backend down, pending
    writes in the unit of work, unkeyable arguments, ``cached=False``...);
    ``errors`` are backend failures; ``invalidations`` tags bumped;
    ``stores`` entries written and ``store_conflicts`` entries refused
    because a tag moved while the query ran; ``replica_uncovered`` entries
    read from a replica not stored because it might miss a change their
    tags announce (docs/caching.md, "Replicas").
    """

    hits: int
    misses: int
    errors: int
    invalidations: int
    coalesced: int = 0
    bypassed: int = 0
    stores: int = 0
    store_conflicts: int = 0
    corrupt: int = 0
    pending_invalidations: int = 0
    replica_uncovered: int = 0


class Cache:
    """Fail-open cache over a backend: an outage turns into misses, never into errors.

    ``commit_lsn`` (a Database with replicas): reads the primary's WAL
    position for each invalidation delivery, so misses served by replicas
    can be stored (docs/caching.md, "Replicas").
    """

    def __init__(
        self,
        backend: CacheBackend,
        *,
        prefix: str,
        ttl: float,
        negative_ttl: float,
        enabled: bool = True,
        breaker: Breaker | None = None,
        commit_lsn: WalPosition | None = None,
    ) -> None:
        self.backend = backend
        self.prefix = prefix
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.enabled = enabled
        self.breaker = breaker or Breaker(name="cache")
        self.tag_ttl = max(MIN_TAG_TTL, 2 * max(ttl, negative_ttl))
        self.flights = Flights()
        self.hits = 0
        self.misses = 0
        self.coalesced = 0
        self.bypassed = 0
        self.stores = 0
        self.store_conflicts = 0
        self.replica_uncovered = 0
        self._fence_refreshed = -FENCE_REFRESH  # monotonic time of the last refresh
        self.corrupt = 0
        #: Tag keys are ``tag_prefix + tag``.
        self.tag_prefix = f"{prefix}:tag:"
        #: The highest WAL position invalidations carried (misses read from replicas).
        self.fence_key = f"{prefix}:lsn"
        self._tasks: set[asyncio.Task[None]] = set()
        self._stores: deque[Store] = deque()
        self._storing: asyncio.AbstractEventLoop | None = None  # loop of the store task
        self._in_flight = 0
        self.delivery = InvalidationDelivery(
            backend,
            self.breaker,
            prefix=prefix,
            tag_prefix=self.tag_prefix,
            tag_ttl=self.tag_ttl,
            fence=self.fence_key,
            commit_lsn=commit_lsn,
        )

    @property
    def invalidations(self) -> int:
        """Tags bumped so far."""
        return self.delivery.delivered

    # -- outcomes of cached reads (counted here, reported by stats()) -------

    def count_hit(self) -> None:
        """A read served from the cache."""
        self.hits += 1

    def count_miss(self) -> None:
        """A read that found no valid entry and queried PostgreSQL."""
        self.misses += 1

    def count_bypass(self) -> None:
        """A read that went straight to PostgreSQL (see ``@cached``'s bypass rules)."""
        self.bypassed += 1

    def count_coalesced(self) -> None:
        """A read that waited for another caller's query of the same entry."""
        self.coalesced += 1

    def count_corrupt(self) -> None:
        """An entry that could not be decoded (then treated as a miss)."""
        self.corrupt += 1

    # -- layout --------------------------------------------------------------

    def key(self, *parts: str) -> str:
        """``<prefix>:<part>:<part>...``"""
        return ":".join((self.prefix, *parts))

    def tag_key(self, tag: str) -> str:
        """Where the token of ``tag`` lives."""
        return self.tag_prefix + tag

    def entry_ttl(self, ttl: float | None, negative: bool) -> float:
        """The TTL of an entry (never longer than half the tag TTL)."""
        chosen = ttl if ttl is not None else (self.negative_ttl if negative else self.ttl)
        return min(chosen, self.tag_ttl / 2)

    @property
    def degraded(self) -> bool:
        """True while the backend is failing or invalidations wait for delivery."""
        return self.breaker.degraded or self.delivery.backlog

    # -- reads ---------------------------------------------------------------

    async def fetch(self, key: str, tags: Sequence[str]) -> bytes | list[bytes] | None:
        """The valid entry, the tag tokens (a miss), or None when the cache is unusable."""
        if self.delivery.backlog and not await self.delivery.deliver(wait=False):
            return None
        if not self.breaker.allow():
            return None
        try:
            got = await self.backend.fetch(key, tags)
        except CacheUnavailable as exc:
            self.breaker.failure(exc, "read")
            return None
        if self.breaker.degraded:
            self.breaker.success()
        return got

    def store_later(
        self,
        key: str,
        body: bytes,
        ttl: float,
        tags: Sequence[str],
        seen: Sequence[bytes],
        replica_lsn: int | None = None,
    ) -> None:
        """Queue an entry for the background store (the caller never waits for it).

        ``replica_lsn``: the result was read from a replica that had replayed
        at least this far; it is stored only if that covers every tag.

        Costs the caller an append and, when idle, one ``call_soon``; the
        store task starts on the next loop iteration and sends everything
        queued by then in one pipelined round trip.
        """
        self._stores.append(
            Store(key, body, ttl, tags, seen, (), self.tag_ttl, self.fence_key, replica_lsn)
        )
        loop = asyncio.get_running_loop()
        if self._storing is not loop:
            self._storing = loop
            loop.call_soon(self._start_storing)

    def _start_storing(self) -> None:
        self.spawn(self._store_queued())

    async def _store_queued(self) -> None:
        try:
            while self._stores:
                count = min(len(self._stores), STORE_BATCH)
                batch = [self._stores.popleft() for _ in range(count)]
                if not self.breaker.allow():
                    continue  # dropped: the next read stores again
                batch = [s._replace(fresh=new_tokens(len(s.tags), "i")) for s in batch]
                self._in_flight = count
                try:
                    results = await self.backend.store(batch)
                except CacheUnavailable as exc:
                    self.breaker.failure(exc, "store")
                    continue
                finally:
                    self._in_flight = 0
                stored, unfenced = results.count(STORED), results.count(NO_FENCE)
                uncovered = results.count(UNCOVERED) + unfenced
                self.stores += stored
                self.replica_uncovered += uncovered
                self.store_conflicts += count - stored - uncovered
                if unfenced:
                    self._refresh_fence()
        finally:
            self._storing = None

    def _refresh_fence(self) -> None:
        """Replica stores were refused for want of a trusted fence: make one (rarely)."""
        now = time.monotonic()
        if now - self._fence_refreshed >= FENCE_REFRESH:
            self._fence_refreshed = now
            self.spawn(self.delivery.refresh_fence())

    # -- invalidation --------------------------------------------------------

    async def invalidate(self, tags: Iterable[str], *, probe: bool = False) -> bool:
        """Bump ``tags`` (and whatever earlier failures left) and delete their entity keys.

        Every call sends its own tags: a concurrent delivery of the same tag
        that started before this caller's commit does not count for it. On
        failure the tags are kept and delivered before this process reads
        from the cache again. Returns True when delivered. Bumping a tag
        twice is harmless (a fresh random token), so redelivery is safe.
        ``probe=True`` tries even while the circuit is open (the outbox relay:
        a recovered Redis is used at once).
        """
        if not self.enabled:
            return True
        mine = set(tags)
        if not mine and not self.delivery.backlog:
            return True
        return await self.delivery.deliver(wait=True, mine=mine, probe=probe)

    # -- background work -----------------------------------------------------

    def spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` in a task that is kept referenced; its errors are logged and counted."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.breaker.errors += 1
            log.error("background cache task failed", exc_info=task.exception())

    @property
    def background(self) -> int:
        """How many entries wait for (or are in) the background store."""
        return len(self._stores) + self._in_flight

    async def drain(self) -> None:
        """Wait until every queued store and background task has finished."""
        loop = asyncio.get_running_loop()
        while True:
            if self._tasks:
                pending = [task for task in self._tasks if not task.done()]
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
                else:
                    # Done, but their done-callbacks (which drop them from the
                    # set) have not run yet. Since 3.12, gather() over finished
                    # tasks completes without yielding: yield explicitly.
                    await asyncio.sleep(0)
            elif self._storing is loop:
                await asyncio.sleep(0)  # the store task starts on the next iteration
            else:
                return

    # -- reporting -----------------------------------------------------------

    def stats(self) -> CacheStats:
        """Hits, misses, errors and invalidations so far (and a few more)."""
        return CacheStats(
            hits=self.hits,
            misses=self.misses,
            errors=self.breaker.errors,
            invalidations=self.invalidations,
            coalesced=self.coalesced,
            bypassed=self.bypassed,
            stores=self.stores,
            store_conflicts=self.store_conflicts,
            corrupt=self.corrupt,
            pending_invalidations=self.delivery.pending,
            replica_uncovered=self.replica_uncovered,
        )

    async def health(self) -> ComponentHealth:
        """Probe the read path; degraded (not down) when it fails or invalidations are pending.

        The probe is the lookup reads use (not a PING, which a Redis that
        refuses or errors on reads would still answer); a success closes the
        circuit and delivers pending invalidations.
        """
        kind = type(self.backend).__name__
        if not self.enabled:
            return ComponentHealth(ok=True, latency_ms=None, detail={"enabled": False})
        started = time.perf_counter()
        try:
            await self.backend.fetch(self.key("health"), [self.tag_key("health")])
        except CacheUnavailable as exc:
            self.breaker.failure(exc, "health check")
            reachable = False
        else:
            reachable = True
            self.breaker.success()
        latency = (time.perf_counter() - started) * 1000
        if reachable and self.delivery.backlog:
            await self.delivery.deliver(wait=True)
        detail: dict[str, Any] = {"backend": kind, "stats": self.stats().__dict__}
        if not reachable:
            return ComponentHealth(
                ok=False,
                latency_ms=None,
                error=f"cache backend failing ({self.breaker.last_error})",
                detail=detail,
            )
        if self.delivery.backlog:
            return ComponentHealth(
                ok=False,
                latency_ms=latency,
                error="cache invalidations waiting for delivery",
                detail=detail,
            )
        return ComponentHealth(ok=True, latency_ms=latency, detail=detail)

    async def clear(self) -> int:
        """Delete every key under this cache's prefix (tests and operators)."""
        try:
            return await self.backend.delete_prefix(f"{self.prefix}:")
        except CacheUnavailable as exc:
            self.breaker.failure(exc, "clear")
            return 0

    async def close(self, timeout: float = 2.0) -> None:
        """Finish (or after ``timeout`` drop) background stores; close the backend."""
        try:
            await asyncio.wait_for(self.drain(), timeout)
        except asyncio.TimeoutError:
            self._stores.clear()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.backend.close()
