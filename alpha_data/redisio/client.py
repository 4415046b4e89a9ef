"""The redis-py asyncio client for each form of ``redis_url``: plain, Sentinel, Cluster.

* ``redis://``, ``rediss://``, ``unix://`` → ``redis.asyncio.Redis.from_url``.
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
  → the master of ``service`` as the Sentinels report it
  (``redis.asyncio.sentinel.Sentinel.master_for``). A connection asks the
  Sentinels for the master's address when it is opened; after a failover the
  old master's connections fail (Sentinel kills them, or the demoted node
  answers READONLY) and the next ones go to the new master. ``user`` and
  ``password`` are for the Redis nodes; ``?sentinel_password=`` (and
  ``sentinel_username``) authenticate to the Sentinels themselves.
* ``redis+cluster://[[user]:password@]host:port[,host:port...]`` → a
  ``redis.asyncio.cluster.RedisCluster`` seeded with those nodes (database 0
  only). Multi-key commands (the cache's Lua scripts, its MULTI invalidation)
  need all their keys in one hash slot: see docs/scaling.md.

Every form takes the same client options (timeouts, retry, client name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as redis_asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

__all__ = ["RedisTarget", "is_cluster", "parse_redis_url", "redis_client"]

log = logging.getLogger("alpha_data.cache")

#: How often (s) a Sentinel client re-asks for the master besides listening for failovers.
SENTINEL_REFRESH = 1.0
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_REDIS_PORT = 6379


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``redis+sentinel://`` or ``redis+cluster://`` URL."""

    kind: str
    nodes: tuple[tuple[str, int], ...]
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a Sentinel or Cluster URL; ValueError (without the password) when malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        raise ValueError(f"not a {SENTINEL_SCHEME}:// or {CLUSTER_SCHEME}:// URL")
    parts = urlsplit(f"x://{rest}")
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    default_port = DEFAULT_SENTINEL_PORT if scheme == SENTINEL_SCHEME else DEFAULT_REDIS_PORT
    nodes = tuple(_node(h, default_port) for h in hosts.split(",") if h)
    if not nodes:
        raise ValueError(f"{scheme}:// URL names no host")
    path = [unquote(p) for p in parts.path.split("/") if p]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme == CLUSTER_SCHEME:
        if path not in ([], ["0"]):
            raise ValueError("a Redis Cluster has database 0 only; drop the path")
        return RedisTarget("cluster", nodes, username=username, password=password)
    if not path or len(path) > 2:
        raise ValueError("use redis+sentinel://host:port[,host:port]/service_name[/db]")
    db = _db(path[1]) if len(path) == 2 else 0
    return RedisTarget(
        "sentinel",
        nodes,
        service=path[0],
        db=db,
        username=username,
        password=password,
        sentinel_username=query.get("sentinel_username"),
        sentinel_password=query.get("sentinel_password"),
    )


def _node(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6-address]:port``."""
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError("empty host in Redis URL")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in Redis URL host {host!r}") from None


def _db(text: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ValueError("the database in a Redis URL must be a number") from None
    if db < 0:
        raise ValueError("the database in a Redis URL must be >= 0")
    return db


class FollowingPool(SentinelConnectionPool):
    """A Sentinel pool that drops, when released, a connection to a former master.

    redis-py's asyncio pool puts every released connection back; one that was
    busy when the master moved would keep talking to the old master.
    """

    async def release(self, connection: Any) -> None:
        """Return ``connection`` to the pool, disconnected if its node is no longer master."""
        master = self.master_address
        if master is not None and (connection.host, connection.port) != tuple(master):
            with contextlib.suppress(Exception):
                await connection.disconnect()
        await super().release(connection)


class SentinelRedis(redis_asyncio.Redis):
    """The master of a Sentinel service that follows failovers promptly.

    redis-py asks the Sentinels for the master only when it opens a
    connection, and after a manual failover the old master keeps answering
    (as a master) until Sentinel reconfigures it, up to ~10 s later: pooled
    connections would keep writing there and those writes (cache
    invalidations) would be lost. So a watcher task, started with the first
    command, listens for ``+switch-master`` on a Sentinel and also re-asks
    every ``SENTINEL_REFRESH`` s; when the master moved, idle connections are
    dropped and busy ones are dropped when released (redis-py's
    ``SentinelConnectionPool.get_master_address``). ``aclose`` stops it and
    closes the connections to the Sentinels.
    """

    _watcher: asyncio.Task[None] | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run a command (and make sure the failover watcher runs)."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())
        result: Any = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return result

    async def _watch(self) -> None:
        pool: Any = self.connection_pool
        manager = pool.sentinel_manager
        while True:
            for sentinel in list(manager.sentinels):
                pubsub = sentinel.pubsub()
                try:
                    await pubsub.subscribe("+switch-master")
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=SENTINEL_REFRESH
                        )
                        if message is None or pool.service_name in str(message.get("data")):
                            await pool.get_master_address()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # this Sentinel is gone: try the next one
                    log.debug("sentinel watch on %r failed: %r", sentinel, exc)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            await asyncio.sleep(SENTINEL_REFRESH)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Stop the watcher; close the master's pool and the connections to the Sentinels."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            with contextlib.suppress(Exception):
                await sentinel.aclose()


def redis_client(url: str, **options: Any) -> redis_asyncio.Redis:
    """A redis-py asyncio client for ``url``; ``options`` go to every connection.

    ``options`` are redis-py connection options (``socket_timeout``,
    ``socket_connect_timeout``, ``retry``, ``health_check_interval``,
    ``client_name``...). For a cluster URL the result is a RedisCluster,
    which offers the same command, pipeline and pub/sub API.
    """
    scheme = url.partition("://")[0]
    if scheme not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        return redis_asyncio.Redis.from_url(url, **options)
    target = parse_redis_url(url)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "cluster":
        cluster_options = dict(options)
        cluster_options.pop("health_check_interval", None)  # not a cluster option
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            **auth,
            **cluster_options,
        )
        return cast(redis_asyncio.Redis, cluster)
    sentinel_options = {
        k: v for k, v in options.items() if k.startswith("socket_") or k == "client_name"
    }
    if target.sentinel_password is not None:
        sentinel_options["password"] = target.sentinel_password
        sentinel_options["username"] = target.sentinel_username
    # Typed loosely on purpose: redis-py < 8.2 leaves Sentinel.__init__ untyped.
    sentinel_class: Any = Sentinel
    sentinel: Any = sentinel_class(list(target.nodes), sentinel_kwargs=sentinel_options)
    master: redis_asyncio.Redis = sentinel.master_for(
        target.service,
        redis_class=SentinelRedis,
        connection_pool_class=FollowingPool,
        db=target.db,
        **auth,
        **options,
    )
    return master


def is_cluster(client: Any) -> bool:
    """True for a RedisCluster client (keys of one multi-key command must share a slot)."""
    return isinstance(client, RedisCluster)
