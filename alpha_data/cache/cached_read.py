"""``CachedRead``: what one ``@cached`` repository method does on each call.

A call goes one of four ways, each a small method here:

* **direct**: no cache scope (the session is not a unit of work's, or
  ``cached=False``): the method runs, nothing is counted;
* **bypass** (:meth:`CachedRead.bypass_reason`): the read must see
  PostgreSQL — an argument is not keyable, the unit of work wrote something
  the read depends on, the object is already in the session, the cache is
  down — counted as ``bypassed``;
* **hit** (:meth:`CachedRead.from_entry`): the entry is valid for the current
  tag tokens; objects are built from it and attached to the session;
* **miss** (:meth:`CachedRead.miss`): concurrent misses of the same key and
  tokens share one query (:meth:`follow` / :meth:`lead`), and the encoded
  result is stored in the background (:meth:`store`) only if no tag moved
  (and, read from a replica, only if the replica had replayed past the
  commits the tags' tokens stand for).

Counters are updated through the Cache's ``count_*`` methods.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state

from alpha_data._sa_internals import session_has_pending
from alpha_data.cache.cache import Cache
from alpha_data.cache.codec import Corrupt, Shape, Uncacheable
from alpha_data.cache.invalidation import REFRESH_KEY, SCOPE_KEY, CacheScope, replica_position
from alpha_data.cache.keys import Unkeyable, part
from alpha_data.cache.orm import InSession, hide_secrets, materialize
from alpha_data.cache.tags import TagSpec, epoch, register_entity_key

__all__ = ["CachedRead", "ReadPlan"]

log = logging.getLogger("alpha_data.cache")

Method = Callable[..., Awaitable[Any]]


class ReadPlan:
    """What a decorated method needs per repository class (its model decides the shape).

    The key prefix and the tag keys that do not depend on arguments are
    worked out once per Cache (``bind``), not on every read.
    """

    __slots__ = (
        "cache",
        "identity_key",
        "key_head",
        "key_prefix",
        "shape",
        "static_tag_keys",
        "static_tags",
        "tag_prefix",
    )

    def __init__(
        self, shape: Shape, by_pk: bool, constant_tags: Sequence[str], key_head: str
    ) -> None:
        self.shape = shape
        self.static_tags = [epoch(t) for t in shape.tables] + list(constant_tags)
        self.identity_key: Callable[[tuple[Any, ...]], Any] | None = (
            shape.codec.identity_key if by_pk else None
        )
        self.key_head = key_head
        self.cache: Cache | None = None
        self.key_prefix = self.tag_prefix = ""
        self.static_tag_keys: list[str] = []

    def bind(self, cache: Cache) -> None:
        """Precompute the key layout of ``cache``."""
        self.key_prefix = cache.key(self.key_head) + ":"
        self.tag_prefix = cache.tag_prefix
        self.static_tag_keys = [cache.tag_prefix + t for t in self.static_tags]
        self.cache = cache


@dataclass
class _Call:
    """One call that may use the cache: where it came from and the keys it reads."""

    repo: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    scope: CacheScope
    plan: ReadPlan
    values: list[Any]
    parts: list[str]
    tags: list[str]
    key: str = ""
    tag_keys: list[str] | None = None

    @property
    def cache(self) -> Cache:
        return self.scope.cache

    @property
    def sync(self) -> Session:
        session: Session = self.repo.session.sync_session
        return session


_MISS = object()


class CachedRead:
    """Cache-aside around one async repository read (built by ``@cached``)."""

    def __init__(
        self,
        fn: Method,
        specs: Sequence[TagSpec],
        *,
        ttl: float | None,
        negative_ttl: float | None,
        shape_of: Callable[[type[Any]], Shape],
    ) -> None:
        self.fn = fn
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.shape_of = shape_of
        self.method = fn.__name__
        self.signature = inspect.signature(fn)
        self.names = [n for n in list(self.signature.parameters)[1:] if n != "cached"]
        by_arg = self._tags_by_argument(specs)
        self.normalizers: list[tuple[int, Callable[[Any], Any]]] = []
        for i, n in enumerate(self.names):
            normalize = by_arg[n].normalize if n in by_arg else None
            if normalize is not None:
                self.normalizers.append((i, normalize))
        self.arg_tags = [
            (i, f"{by_arg[n].namespace}:{by_arg[n].field}:")
            for i, n in enumerate(self.names)
            if n in by_arg
        ]
        self.const_tags = [s.tag() for s in specs if s.constant]
        entity = specs[0].namespace
        if len(self.names) == 1 and len(by_arg) == 1:
            register_entity_key(by_arg[self.names[0]], entity, self.method)
        self.key_head = f"{entity}:{self.method}"
        self.plans: dict[type[Any], ReadPlan] = {}

    def _tags_by_argument(self, specs: Sequence[TagSpec]) -> dict[str, TagSpec]:
        by_arg: dict[str, TagSpec] = {}
        for spec in specs:
            if spec.constant:
                continue
            if spec.attribute not in self.names or spec.attribute in by_arg:
                raise TypeError(f"{self.method}: tag {spec} must name one argument of its own")
            by_arg[spec.attribute] = spec
        return by_arg

    def plan_for(self, repo_type: type[Any]) -> ReadPlan:
        """The plan of ``repo_type`` (its model), built on first use."""
        plan = self.plans.get(repo_type)
        if plan is None:
            model = repo_type.model
            pk = [c.key for c in model.__mapper__.primary_key]
            shape = self.shape_of(model)
            plan = self.plans[repo_type] = ReadPlan(
                shape, self.names == pk, self.const_tags, self.key_head
            )
        return plan

    # -- the call --------------------------------------------------------------

    async def __call__(self, repo: Any, *args: Any, **kwargs: Any) -> Any:
        use = kwargs.pop("cached", True) if kwargs else True
        sync = repo.session.sync_session
        scope: CacheScope | None = sync.info.get(SCOPE_KEY) if use else None
        if scope is None or not scope.reads:
            return await self.fn(repo, *args, **kwargs)
        call = self.prepare(repo, args, kwargs, scope)
        if call is None or self.bypass_reason(call) is not None:
            return await self.bypass(scope.cache, repo, args, kwargs)
        call.key = call.plan.key_prefix + ":".join(call.parts)
        call.tag_keys = call.plan.static_tag_keys + [
            call.plan.tag_prefix + t for t in call.tags[len(call.plan.static_tags) :]
        ]
        got = await call.cache.fetch(call.key, call.tag_keys)
        if got is None:  # the cache is down or disabled
            return await self.bypass(call.cache, repo, args, kwargs)
        if isinstance(got, bytes):
            result, seen = self.from_entry(call, got)
            if result is not _MISS:
                return result
            if seen is None:  # the session holds one of the objects: its copy wins
                return await self.bypass(call.cache, repo, args, kwargs)
        else:
            seen = got
        call.cache.count_miss()
        return await self.miss(call, seen)

    async def bypass(self, cache: Cache, repo: Any, args: Any, kwargs: Any) -> Any:
        """Read PostgreSQL directly, counted as bypassed."""
        cache.count_bypass()
        return await self.fn(repo, *args, **kwargs)

    def prepare(
        self, repo: Any, args: tuple[Any, ...], kwargs: dict[str, Any], scope: CacheScope
    ) -> _Call | None:
        """The key parts and tags of this call; None when an argument is not keyable."""
        plan = self.plans.get(type(repo)) or self.plan_for(type(repo))
        if plan.cache is not scope.cache:
            plan.bind(scope.cache)
        try:
            values = self._values(repo, args, kwargs)
            parts = [part(v) for v in values]
        except (Unkeyable, TypeError, ValueError):  # the method reports bad arguments
            return None
        tags = plan.static_tags + [head + parts[i] for i, head in self.arg_tags]
        return _Call(repo, args, kwargs, scope, plan, values, parts, tags)

    def _values(self, repo: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        if kwargs or len(args) != len(self.names):
            bound = self.signature.bind(repo, *args, **kwargs)
            bound.apply_defaults()
            values = [bound.arguments[n] for n in self.names]
        else:
            values = list(args)
        for i, normalize in self.normalizers:
            if values[i] is not None:
                values[i] = normalize(values[i])
        return values

    def bypass_reason(self, call: _Call) -> str | None:
        """Why this call must read PostgreSQL (read-your-writes, held object), or None."""
        dirtied = call.scope.tags
        if dirtied and not dirtied.isdisjoint(call.tags):
            return "the unit of work changed what the read depends on"
        sync = call.sync
        if session_has_pending(sync):
            return "the session has unflushed changes"
        identity_key = call.plan.identity_key
        if identity_key is not None and identity_key(tuple(call.values)) in sync.identity_map:
            return "the object is already in the session"
        return None

    def from_entry(self, call: _Call, entry: bytes) -> tuple[Any, list[bytes] | None]:
        """``(result, None)`` on a hit; ``(_MISS, tokens)`` for a corrupt entry;
        ``(_MISS, None)`` when the session already holds one of its objects."""
        shape = call.plan.shape
        try:
            result = materialize(shape, shape.parse(entry), call.sync)
        except InSession:
            return _MISS, None
        except Corrupt:
            call.cache.count_corrupt()
            return _MISS, _tokens_in(entry)
        call.cache.count_hit()
        return result, None

    # -- miss ------------------------------------------------------------------

    async def miss(self, call: _Call, seen: list[bytes]) -> Any:
        """Query once per key and tokens; followers reuse the leader's result."""
        flight = (call.key, tuple(seen))
        leader = call.cache.flights.find(flight)
        if leader is not None:
            return await self.follow(call, leader)
        return await self.lead(call, flight, seen)

    async def follow(self, call: _Call, leader: asyncio.Future[bytes | None]) -> Any:
        """Wait for the leader's query; build from its body, or query when it has none."""
        body = await asyncio.shield(leader)
        if body is not None:
            shape = call.plan.shape
            try:
                result = materialize(shape, shape.parse(b'["",' + body), call.sync)
            except (Corrupt, InSession):
                pass
            else:
                call.cache.count_coalesced()
                return result
        return await self.fn(call.repo, *call.args, **call.kwargs)

    async def lead(self, call: _Call, flight: Any, seen: list[bytes]) -> Any:
        """Run the query (refreshing held objects), encode the result, store it later.

        A result read from a replica is stored only if the replica had
        replayed past every tag's LSN (checked by the backend); followers
        never take it, since they may read the primary.
        """
        cache = call.cache
        future = cache.flights.lead(flight)
        body = replica = None
        sync = call.sync
        held = set(sync.identity_map.keys()) if len(sync.identity_map) else ()
        try:
            # Objects the session already held are refreshed from the rows read
            # now (populate_existing), so the result is as fresh as the tokens
            # in ``seen`` and can be stored under them.
            sync.info[REFRESH_KEY] = True
            try:
                result = await self.fn(call.repo, *call.args, **call.kwargs)
            finally:
                sync.info.pop(REFRESH_KEY, None)
            _hide_new_secrets(call.plan.shape, result, held)
            replica = replica_position(sync)
            if not call.scope.dirtied(call.tags) and replica != 0:
                body = self.encode(call, result)
        finally:
            cache.flights.land(flight, future, body if replica is None else None)
        if body is not None:
            self.store(call, result, body, seen, replica)
        return result

    @staticmethod
    def encode(call: _Call, result: Any) -> bytes | None:
        """The entry body of ``result``, or None when it cannot be cached."""
        try:
            return call.plan.shape.encode(result)
        except Uncacheable as exc:
            log.debug("not caching %s: %s", call.key, exc)
            return None

    def store(
        self, call: _Call, result: Any, body: bytes, seen: list[bytes], replica: int | None
    ) -> None:
        """Queue the background store (kept only if no tag moved since ``seen`` and,
        for a result read from a replica at ``replica``, every tag is covered)."""
        negative = result is None
        chosen = self.negative_ttl if negative else self.ttl
        assert call.tag_keys is not None
        call.cache.store_later(
            call.key, body, call.cache.entry_ttl(chosen, negative), call.tag_keys, seen, replica
        )


def _hide_new_secrets(shape: Shape, result: Any, held: Any) -> None:
    """Like a hit, a cached read returns no secrets; objects already held keep theirs."""
    for obj in _objects(shape, result):
        secrets = type(obj).__secret_attributes__
        if secrets and instance_state(obj).key not in held:
            hide_secrets(obj, secrets)


def _objects(shape: Shape, result: Any) -> Iterator[Any]:
    """Every ORM object of a result: the rows and the relationships the read loaded."""
    if result is None:
        return
    for obj in shape.items_of(result):
        yield obj
        loaded = obj.__dict__
        for name, _, uselist in shape.related:
            value = loaded.get(name)
            if uselist:
                yield from value or ()
            elif value is not None:
                yield value


def _tokens_in(entry: bytes) -> list[bytes]:
    """The tokens at the head of an entry (``["a,b",...``)."""
    return entry[2 : entry.index(b'",')].split(b",")
