"""Cache: the fail-open front of a backend, with key layout, TTLs and counters."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from alpha_data.cache.backends import CacheBackend, CacheUnavailable
from alpha_data.health import ComponentHealth

__all__ = ["Cache", "CacheStats"]

log = logging.getLogger("alpha_data.cache")

_WARN_INTERVAL = 30.0


@dataclass(frozen=True)
class CacheStats:
    """Counters since the Database was created."""

    hits: int
    misses: int
    errors: int
    invalidations: int


class Cache:
    """Fail-open cache over a backend: an outage turns into misses, never into errors."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        prefix: str,
        ttl: float,
        negative_ttl: float,
        enabled: bool = True,
    ) -> None:
        self.backend = backend
        self.prefix = prefix
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.invalidations = 0
        self._last_warning = float("-inf")
        self.degraded = False

    def key(self, *parts: str) -> str:
        """``<prefix>:<part>:<part>...``"""
        return ":".join((self.prefix, *parts))

    def failed(self, exc: CacheUnavailable) -> None:
        """Count a backend failure and warn at most once per interval."""
        self.errors += 1
        self.degraded = True
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL:
            self._last_warning = now
            log.warning("cache unavailable, reading from PostgreSQL", extra={"error": str(exc)})

    def recovered(self) -> None:
        """Mark the backend healthy again after a successful call."""
        self.degraded = False

    def stats(self) -> CacheStats:
        """Hits, misses, errors and invalidations so far."""
        return CacheStats(self.hits, self.misses, self.errors, self.invalidations)

    async def health(self) -> ComponentHealth:
        """Ping the backend; a failure means degraded, not down."""
        if not self.enabled:
            return ComponentHealth(ok=True, latency_ms=None, detail={"enabled": False})
        started = time.perf_counter()
        ok = await self.backend.ping()
        latency = (time.perf_counter() - started) * 1000
        kind = type(self.backend).__name__
        if ok:
            return ComponentHealth(ok=True, latency_ms=latency, detail={"backend": kind})
        return ComponentHealth(
            ok=False, latency_ms=None, error="cache backend unreachable", detail={"backend": kind}
        )

    async def clear(self) -> int:
        """Delete every key under this cache's prefix (tests and operators)."""
        try:
            return await self.backend.delete_prefix(f"{self.prefix}:")
        except CacheUnavailable as exc:
            self.failed(exc)
            return 0

    async def close(self) -> None:
        """Close the backend connection."""
        await self.backend.close()
