"""Redis infrastructure shared by the cache and the event bus.

* ``client``: the redis-py asyncio client for every form of ``redis_url``
  (plain, Sentinel, Cluster);
* ``breaker``: the circuit breaker with throttled warnings both fail-open
  users keep in front of their backend;
* ``protocol``: what flows over a backend besides cache entries (stream
  entries and messages, the pub/sub link) and ``CacheUnavailable``, the one
  failure every backend call raises.

Named ``redisio`` rather than ``redis`` so that ``alpha_data.redis`` is never
mistaken for the redis-py package it wraps.
"""

from alpha_data.redisio.breaker import Breaker
from alpha_data.redisio.client import RedisTarget, is_cluster, parse_redis_url, redis_client
from alpha_data.redisio.protocol import CacheUnavailable, PubSubLink, StreamEntry, StreamMessage

__all__ = [
    "Breaker",
    "CacheUnavailable",
    "PubSubLink",
    "RedisTarget",
    "StreamEntry",
    "StreamMessage",
    "is_cluster",
    "parse_redis_url",
    "redis_client",
]
