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

What a method returns decides the entry's shape, checked when the method is
decorated: ``Model | None``; ``list[Model]`` with ``many=True``; or
``Page[Model]`` (a keyset page: its items and ``next_cursor`` are cached
together). The per-call work is :class:`alpha_data.cache.cached_read.CachedRead`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar, cast, get_origin

from alpha_data.cache.cached_read import CachedRead
from alpha_data.cache.codec import Shape
from alpha_data.cache.tags import TagSpec, as_spec

__all__ = ["cached"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

ResultKind = Literal["one", "many", "page"]

# The outer type of a string annotation (``from __future__ import annotations``).
_OUTER = re.compile(r"^\s*(?:[\w.]+\.)?(?P<name>\w+)\s*\[")
_LIST_NAMES = frozenset({"list", "List", "Sequence", "tuple", "Tuple", "Iterable"})


def result_kind(fn: Callable[..., Any], many: bool) -> ResultKind:
    """What ``fn`` returns, from its return annotation and ``many``; TypeError when they disagree.

    ``Page[...]`` is a page (``many`` is implied); a list-like annotation needs
    ``many=True``. Without an annotation ``many`` decides.
    """
    annotation = getattr(fn, "__annotations__", {}).get("return")
    outer = _outer_name(annotation)
    if outer == "Page":
        return "page"
    if outer in _LIST_NAMES and not many:
        raise TypeError(
            f"@cached on {fn.__qualname__}: it returns {annotation}; pass many=True to cache a list"
        )
    return "many" if many else "one"


def _outer_name(annotation: Any) -> str | None:
    if annotation is None:
        return None
    if isinstance(annotation, str):
        match = _OUTER.match(annotation)
        return match.group("name") if match else None
    origin = get_origin(annotation) or annotation
    name = getattr(origin, "__name__", None)
    return name if isinstance(name, str) else None


def cached(
    *tags: TagSpec | str,
    ttl: float | None = None,
    negative_ttl: float | None = None,
    many: bool = False,
    load: Sequence[str] = (),
) -> Callable[[F], F]:
    """Cache an async repository read returning ``Model | None``, ``list[Model]`` or ``Page``.

    ``tags`` are what the result depends on (TagSpecs whose value is the
    argument of the same name, or constant tags); the read also depends on
    the table epoch of its model and of each relationship in ``load``, which
    the method must load eagerly. ``many=True`` for a method returning a
    list. ``ttl`` defaults to ``cache_ttl`` and, for a None result,
    ``cache_negative_ttl``. The decorated method accepts ``cached=False`` to
    read PostgreSQL directly.
    """
    specs = tuple(as_spec(t) for t in tags)
    if not specs:
        raise ValueError("cached() needs at least one tag")

    def decorate(fn: F) -> F:
        kind = result_kind(fn, many)

        def shape_of(model: type[Any]) -> Shape:
            return Shape(model, load=load, many=kind == "many", page=kind == "page")

        read = CachedRead(fn, specs, ttl=ttl, negative_ttl=negative_ttl, shape_of=shape_of)

        @functools.wraps(fn)
        async def wrapper(repo: Any, *args: Any, **kwargs: Any) -> Any:
            return await read(repo, *args, **kwargs)

        wrapper.cached_read = read  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate
