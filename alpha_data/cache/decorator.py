"""``@cached``: cache-aside for async repository reads that return ORM objects.

::

    @cached(USER_NAME)
    async def get_by_username(self, username: str, *, cached: bool = True) -> User | None:

The key is ``<prefix>:<entity>:<method>:<arg>:<arg>...`` (entity = the
namespace of the first tag). One backend round trip per read (an MGET of the
entry and its tags):

* hit: the entry is valid for the current tag tokens → ORM objects are built
  from it and attached to the caller's session; PostgreSQL is not touched.
* miss: the tokens come back instead; the method runs (concurrent misses of
  the same key and tokens share one query) and the encoded result is stored
  *in the background*, only if no tag moved since the tokens were read (and
  not at all when the session read a streaming replica, which may lag).

Reads go straight to PostgreSQL (``bypassed``) when the call passes
``cached=False``, the session has no cache scope (not from a unit of work),
the unit of work runs at REPEATABLE READ/SERIALIZABLE, the cache is disabled
or down, an argument is not keyable, or the unit of work has pending or
flushed writes that the read depends on (read-your-writes).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state

from alpha_data.cache.codec import Corrupt, Shape, Uncacheable
from alpha_data.cache.invalidation import REFRESH_KEY, SCOPE_KEY, CacheScope, reads_replica
from alpha_data.cache.keys import Unkeyable, part
from alpha_data.cache.orm import InSession, hide_secrets, materialize
from alpha_data.cache.store import Cache
from alpha_data.cache.tags import TagSpec, as_spec, epoch, register_entity_key

__all__ = ["cached"]

log = logging.getLogger("alpha_data.cache")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class _Plan:
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
        self,
        model: type[Any],
        load: Sequence[str],
        many: bool,
        by_pk: bool,
        constant_tags: Sequence[str],
        key_head: str,
    ) -> None:
        self.shape = Shape(model, load=load, many=many)
        self.static_tags = [epoch(t) for t in self.shape.tables] + list(constant_tags)
        self.identity_key = self.shape.codec.identity_key if by_pk else None
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


def _has_pending(session: Session) -> bool:
    """Unflushed changes in the session (a real query would autoflush them first)."""
    return not session._is_clean()


def _objects(shape: Shape, result: Any) -> Iterator[Any]:
    if result is None:
        return
    for obj in result if shape.many else (result,):
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


def cached(
    *tags: TagSpec | str,
    ttl: float | None = None,
    negative_ttl: float | None = None,
    many: bool = False,
    load: Sequence[str] = (),
) -> Callable[[F], F]:
    """Cache an async repository read returning ``Model | None`` (or ``list[Model]``, ``many``).

    ``tags`` are what the result depends on (TagSpecs whose value is the
    argument of the same name, or constant tags); the read also depends on
    the table epoch of its model and of each relationship in ``load``, which
    the method must load eagerly. ``ttl`` defaults to ``cache_ttl`` and, for
    a None result, ``cache_negative_ttl``. The decorated method accepts
    ``cached=False`` to read PostgreSQL directly.
    """
    specs = tuple(as_spec(t) for t in tags)
    if not specs:
        raise ValueError("cached() needs at least one tag")
    entity = specs[0].namespace

    def decorate(fn: F) -> F:
        method = fn.__name__
        signature = inspect.signature(fn)
        names = [n for n in list(signature.parameters)[1:] if n != "cached"]
        by_arg: dict[str, TagSpec] = {}
        for spec in specs:
            if spec.constant:
                continue
            if spec.attribute not in names or spec.attribute in by_arg:
                raise TypeError(f"{method}: tag {spec} must name one argument of its own")
            by_arg[spec.attribute] = spec
        normalizers: list[tuple[int, Callable[[Any], Any]]] = []
        for i, n in enumerate(names):
            normalize = by_arg[n].normalize if n in by_arg else None
            if normalize is not None:
                normalizers.append((i, normalize))
        arg_tags = [
            (i, f"{by_arg[n].namespace}:{by_arg[n].field}:")
            for i, n in enumerate(names)
            if n in by_arg
        ]
        const_tags = [s.tag() for s in specs if s.constant]
        if len(names) == 1 and len(by_arg) == 1:
            register_entity_key(by_arg[names[0]], entity, method)
        key_head = f"{entity}:{method}"
        plans: dict[type[Any], _Plan] = {}

        def plan_for(repo_type: type[Any]) -> _Plan:
            plan = plans.get(repo_type)
            if plan is None:
                model = repo_type.model
                pk = [c.key for c in model.__mapper__.primary_key]
                plan = plans[repo_type] = _Plan(
                    model, load, many, names == pk, const_tags, key_head
                )
            return plan

        async def bypass(cache: Cache, repo: Any, args: Any, kwargs: Any) -> Any:
            cache.bypassed += 1
            return await fn(repo, *args, **kwargs)

        @functools.wraps(fn)
        async def wrapper(repo: Any, *args: Any, **kwargs: Any) -> Any:
            use = kwargs.pop("cached", True) if kwargs else True
            session = repo.session
            sync = session.sync_session
            scope: CacheScope | None = sync.info.get(SCOPE_KEY) if use else None
            if scope is None or not scope.reads:
                return await fn(repo, *args, **kwargs)
            cache = scope.cache
            plan = plans.get(type(repo)) or plan_for(type(repo))
            if plan.cache is not cache:
                plan.bind(cache)
            try:
                if kwargs or len(args) != len(names):
                    bound = signature.bind(repo, *args, **kwargs)
                    bound.apply_defaults()
                    values = [bound.arguments[n] for n in names]
                else:
                    values = list(args)
                for i, normalize in normalizers:
                    if values[i] is not None:
                        values[i] = normalize(values[i])
                parts = [part(v) for v in values]
            except (Unkeyable, TypeError, ValueError):  # the method reports bad arguments
                return await bypass(cache, repo, args, kwargs)
            arg_tag_values = [head + parts[i] for i, head in arg_tags]
            tags = plan.static_tags + arg_tag_values
            dirtied = scope.tags
            if (dirtied and not dirtied.isdisjoint(tags)) or _has_pending(sync):
                return await bypass(cache, repo, args, kwargs)
            if (
                plan.identity_key is not None
                and plan.identity_key(tuple(values)) in sync.identity_map
            ):
                return await bypass(cache, repo, args, kwargs)
            key = plan.key_prefix + ":".join(parts)
            tag_prefix = plan.tag_prefix
            tag_keys = plan.static_tag_keys + [tag_prefix + t for t in arg_tag_values]
            got = await cache.fetch(key, tag_keys)
            if got is None:
                return await bypass(cache, repo, args, kwargs)
            if isinstance(got, bytes):
                try:
                    result = materialize(plan.shape, plan.shape.parse(got), sync)
                except InSession:
                    return await bypass(cache, repo, args, kwargs)
                except Corrupt:
                    cache.corrupt += 1
                    seen = _tokens_in(got)
                else:
                    cache.hits += 1
                    return result
            else:
                seen = got
            cache.misses += 1
            return await miss(repo, args, kwargs, plan, scope, key, tags, tag_keys, seen)

        async def miss(
            repo: Any,
            args: Any,
            kwargs: Any,
            plan: _Plan,
            scope: CacheScope,
            key: str,
            tags: list[str],
            tag_keys: list[str],
            seen: list[bytes],
        ) -> Any:
            cache = scope.cache
            session = repo.session
            flight = (key, tuple(seen))
            leader = cache.flights.find(flight)
            if leader is not None:
                body = await asyncio.shield(leader)
                if body is not None:
                    try:
                        result = materialize(
                            plan.shape, plan.shape.parse(b'["",' + body), session.sync_session
                        )
                    except (Corrupt, InSession):
                        pass
                    else:
                        cache.coalesced += 1
                        return result
                return await fn(repo, *args, **kwargs)
            future = cache.flights.lead(flight)
            body = None
            sync = session.sync_session
            info = sync.info
            held = set(sync.identity_map.keys()) if len(sync.identity_map) else ()
            try:
                # Objects the session already held are refreshed from the rows
                # read now (populate_existing), so the result is as fresh as
                # the tokens in ``seen`` and can be stored under them.
                info[REFRESH_KEY] = True
                try:
                    result = await fn(repo, *args, **kwargs)
                finally:
                    info.pop(REFRESH_KEY, None)
                for obj in _objects(plan.shape, result):
                    # Like a hit, a cached read returns no secrets; objects the
                    # caller already held keep what they had.
                    secrets = type(obj).__secret_attributes__
                    if secrets and instance_state(obj).key not in held:
                        hide_secrets(obj, secrets)
                if not scope.dirtied(tags) and not reads_replica(sync):
                    try:
                        body = plan.shape.encode(result)
                    except Uncacheable as exc:
                        log.debug("not caching %s: %s", key, exc)
            finally:
                cache.flights.land(flight, future, body)
            if body is not None:
                negative = result is None
                chosen = negative_ttl if negative else ttl
                cache.store_later(key, body, cache.entry_ttl(chosen, negative), tag_keys, seen)
            return result

        return cast(F, wrapper)

    return decorate
