"""The lost-invalidation race (issue 16): concurrent commits invalidating the same tag.

A commit whose delivery of tag ``t`` is in flight must not make a second
commit (committed while the first was in flight) skip its own bump of ``t``:
a reader may have cached the pre-commit row under the token of the first
bump. The backend wrapper holds the first delivery after Redis applied it,
which forces exactly that interleaving against the real Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from alpha_data import Settings
from alpha_data.cache import Cache, make_cache_backend


class HeldBackend:
    """Delegates to a real backend; the first ``invalidate`` waits on ``gate`` after applying."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.client = inner.client
        self.gate = asyncio.Event()
        self.applied = asyncio.Event()
        self.batches: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def invalidate(
        self, keys: Sequence[str], tags: Sequence[str], fresh: Sequence[str], tag_ttl: float
    ) -> None:
        await self.inner.invalidate(keys, tags, fresh, tag_ttl)
        self.batches.append(list(tags))
        if len(self.batches) == 1:
            self.applied.set()
            await self.gate.wait()


async def test_a_commit_during_another_delivery_sends_its_own_bump(settings: Settings) -> None:
    backend = HeldBackend(make_cache_backend(settings))
    cache = Cache(backend, prefix=settings.cache_prefix, ttl=60, negative_ttl=5)  # type: ignore[arg-type]
    tag_key = cache.tag_key("users:1")
    try:
        first = asyncio.create_task(cache.invalidate(["users:1"]))
        await asyncio.wait_for(backend.applied.wait(), 5)
        # A reader now sees (and would cache under) the token of the first bump.
        seen = await backend.client.get(tag_key)
        second = asyncio.create_task(cache.invalidate(["users:1"]))
        await asyncio.sleep(0.05)  # the second commit waits behind the first delivery
        backend.gate.set()
        assert await first and await second
        assert await backend.client.get(tag_key) != seen
        assert [b for b in backend.batches if "users:1" in "".join(b)] == [
            [tag_key],
            [tag_key],
        ]
        assert cache.stats().pending_invalidations == 0
    finally:
        await backend.client.delete(tag_key)
        await cache.close()


async def test_a_failed_tag_kept_again_during_delivery_stays_pending(settings: Settings) -> None:
    backend = HeldBackend(make_cache_backend(settings))
    cache = Cache(backend, prefix=settings.cache_prefix, ttl=60, negative_ttl=5)  # type: ignore[arg-type]
    try:
        cache._keep(["users:2"])  # an earlier failed delivery
        first = asyncio.create_task(cache.invalidate(["users:3"]))
        await asyncio.wait_for(backend.applied.wait(), 5)
        cache._keep(["users:2"])  # failed again while the batch was in flight
        backend.gate.set()
        assert await first
        assert cache.stats().pending_invalidations == 1  # the later failure is not forgotten
        assert await cache.invalidate([])
        assert cache.stats().pending_invalidations == 0
    finally:
        await backend.client.delete(cache.tag_key("users:2"), cache.tag_key("users:3"))
        await cache.close()
