"""Cache-aside layer: ``@cached`` reads, tag invalidation after commit, fail-open backends.

See docs/caching.md for keys, TTLs, the no-stale-window protocol and what
happens when Redis is down.
"""

from alpha_data.cache.backends import CacheBackend, CacheUnavailable, make_cache_backend
from alpha_data.cache.cache import Cache, CacheStats
from alpha_data.cache.decorator import cached
from alpha_data.cache.invalidation import CacheScope, invalidate, invalidates, scope_of
from alpha_data.cache.memory_backend import MemoryBackend
from alpha_data.cache.orm import SecretNotLoadedError
from alpha_data.cache.redis_backend import RedisBackend
from alpha_data.cache.tags import TagSpec, invalidated_by
from alpha_data.redisio.breaker import Breaker

__all__ = [
    "Breaker",
    "Cache",
    "CacheBackend",
    "CacheScope",
    "CacheStats",
    "CacheUnavailable",
    "MemoryBackend",
    "RedisBackend",
    "SecretNotLoadedError",
    "TagSpec",
    "cached",
    "invalidate",
    "invalidated_by",
    "invalidates",
    "make_cache_backend",
    "scope_of",
]
