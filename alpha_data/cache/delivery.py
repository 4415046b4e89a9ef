"""Delivering invalidations to the backend, and keeping the ones it did not take.

A commit's tags are sent at once; when the backend fails they are kept (up
to ``MAX_PENDING`` tags) and sent again, with the next commit's tags or
before this process reads from the cache again. Past that bound everything
under the prefix is deleted once the backend answers. Other processes get
lost invalidations from the transactional outbox (alpha_data.outbox): any
live relay of the prefix delivers them again (see docs/caching.md). In a
Database with replicas each delivery carries the primary's WAL position
read after its commits, which lets misses served by replicas be stored
(``backends`` module docstring).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from alpha_data.cache.backends import CacheBackend, new_tokens
from alpha_data.cache.tags import entity_keys
from alpha_data.redisio.breaker import Breaker
from alpha_data.redisio.protocol import CacheUnavailable

__all__ = ["MAX_PENDING", "InvalidationDelivery", "WalPosition"]

#: Reads the primary's WAL position, past every commit that has returned; the
#: flag says whether it also fences this Database's own commits (a delivery
#: after them) or not (a fence refresh).
WalPosition = Callable[[bool], Awaitable[int]]

log = logging.getLogger("alpha_data.cache")

#: Undelivered invalidation tags kept for redelivery before falling back to a full clear.
MAX_PENDING = 10_000


class InvalidationDelivery:
    """Sends tag bumps (with their entity-key deletes) and keeps what failed for later."""

    def __init__(
        self,
        backend: CacheBackend,
        breaker: Breaker,
        *,
        prefix: str,
        tag_prefix: str,
        tag_ttl: float,
        fence: str,
        commit_lsn: WalPosition | None = None,
    ) -> None:
        self.backend = backend
        #: The key of the highest LSN invalidations carried (backends module docstring).
        self.fence = fence
        #: Reads the primary's WAL position (None: invalidations carry no LSN).
        self.commit_lsn = commit_lsn
        #: The nonce of the untrusted fence the last delivery found ('' none):
        #: the next delivery, whose LSN is read after that reply, confirms it.
        self.fence_nonce = ""
        self.breaker = breaker
        self.prefix = prefix
        self.tag_prefix = tag_prefix
        self.tag_ttl = tag_ttl
        #: Tags bumped so far (reported as the cache's ``invalidations``).
        self.delivered = 0
        #: Undelivered tags -> when they were (last) kept (see ``deliver``).
        self._pending: dict[str, int] = {}
        self._generation = 0
        self._overflowed = False
        self._delivering = asyncio.Lock()

    @property
    def backlog(self) -> bool:
        """True while kept tags (or a full clear after an overflow) wait for delivery."""
        return bool(self._pending) or self._overflowed

    @property
    def pending(self) -> int:
        """How many tags wait for delivery."""
        return len(self._pending)

    def keep(self, tags: Iterable[str]) -> None:
        """Keep ``tags`` for a later delivery; past ``MAX_PENDING`` fall back to a full clear."""
        if self._overflowed:
            return
        for tag in tags:
            self._generation += 1
            self._pending[tag] = self._generation
        if len(self._pending) > MAX_PENDING:
            log.error(
                "more than %d cache invalidations undelivered; the whole cache prefix "
                "will be cleared when the backend answers",
                MAX_PENDING,
            )
            self._pending.clear()
            self._overflowed = True

    async def deliver(
        self, *, wait: bool, mine: set[str] | None = None, probe: bool = False
    ) -> bool:
        """Deliver ``mine`` plus what is pending; readers (``wait=False``) never queue.

        A pending tag is dropped only if nobody kept it again while the
        batch was in flight (its generation is unchanged). ``probe`` tries
        even while the breaker is open.
        """
        mine = mine or set()
        if (self._delivering.locked() and not wait) or not (probe or self.breaker.allow()):
            self.keep(mine)
            return False
        async with self._delivering:
            if self._overflowed:
                try:
                    await self.backend.delete_prefix(f"{self.prefix}:")
                except CacheUnavailable as exc:
                    self.breaker.failure(exc, "clear after lost invalidations")
                    return False
                self._overflowed = False
            carried = dict(self._pending)
            batch = list(mine.union(carried))
            if not batch:
                return True
            keys = [f"{self.prefix}:{k}" for tag in batch for k in entity_keys(tag)]
            tag_keys = [self.tag_prefix + t for t in batch]
            # The nonce first: the LSN is then read after the reply that gave it,
            # whatever else this process delivers meanwhile.
            confirm = self.fence_nonce
            lsn = await self._position()  # after every commit of the batch
            try:
                self.fence_nonce = await self.backend.invalidate(
                    keys,
                    tag_keys,
                    new_tokens(len(batch), "b"),
                    self.tag_ttl,
                    fence=self.fence,
                    lsn=lsn,
                    confirm=confirm,
                )
            except CacheUnavailable as exc:
                self.keep(mine)
                self.breaker.failure(exc, "invalidate")
                return False
            for tag, generation in carried.items():
                if self._pending.get(tag) == generation:
                    del self._pending[tag]
            self.delivered += len(batch)
            self.breaker.success()
            return True

    async def refresh_fence(self) -> None:
        """Create and confirm the fence without a write (a Database with replicas).

        Replica misses of tags without an LSN of their own need a trusted
        fence; after a new prefix, a clear, a Redis restart or a writer
        without replicas there is none until two deliveries. Two fence-only
        invalidations do the same: each reads its LSN after the previous
        reply. Skipped while a delivery runs (it moves the fence too).
        """
        if self.commit_lsn is None or self._delivering.locked():
            return
        async with self._delivering:
            for _ in range(2):
                confirm = self.fence_nonce
                lsn = await self._position(delivery=False)
                if lsn is None:
                    return
                try:
                    self.fence_nonce = await self.backend.invalidate(
                        [], [], [], self.tag_ttl, fence=self.fence, lsn=lsn, confirm=confirm
                    )
                except CacheUnavailable as exc:
                    self.breaker.failure(exc, "fence")
                    return
                if not self.fence_nonce:
                    return  # trusted

    async def _position(self, *, delivery: bool = True) -> int | None:
        """The primary's WAL position now, at or past every commit delivered (None: unknown).

        Read only by a Database with replicas, within the Router's probe
        timeout. A failure does not stop a delivery: it goes out without an
        LSN, which deletes the fence; tags without an LSN of their own fill
        from replicas again once a new fence is confirmed (``refresh_fence``).
        """
        if self.commit_lsn is None:
            return None
        try:
            return await self.commit_lsn(delivery)
        except Exception as exc:
            if delivery:
                log.warning(
                    "cannot read the primary's WAL position (%s): this invalidation carries "
                    "none, so some misses served by replicas are not cached for a while",
                    type(exc).__name__,
                )
            else:
                log.debug("fence refresh: no WAL position (%r)", exc)
            return None
