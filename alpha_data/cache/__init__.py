"""Cache-aside layer: backends (Redis, memory), codec and the ``@cached`` decorator."""

from alpha_data.cache.backends import (
    CacheBackend,
    CacheUnavailable,
    MemoryBackend,
    RedisBackend,
    make_cache_backend,
)
from alpha_data.cache.store import Cache, CacheStats

__all__ = [
    "Cache",
    "CacheBackend",
    "CacheStats",
    "CacheUnavailable",
    "MemoryBackend",
    "RedisBackend",
    "make_cache_backend",
]
