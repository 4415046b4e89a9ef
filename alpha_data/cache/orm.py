"""Turn cached column values into ORM objects attached to a session, like loaded ones.

Objects are created the way the ORM's loader creates them (no ``__init__``,
values written straight into the instance dict, identity key set, added to
the session's identity map without cascades or SQL), so a hit costs a few
microseconds. Relationships named in the read's ``load`` are set as loaded;
the others stay unloaded and behave as after a real query (``raise_on_sql``).

Secret columns are never in the cache. On objects a cached read returns they
are *hidden*: reading one raises ``SecretNotLoadedError`` instead of
returning None or emitting SQL. ``await session.refresh(obj, [name])`` (or
the read with ``cached=False``) loads it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import LoaderCallableStatus, PassiveFlag, Session
from sqlalchemy.orm.attributes import set_committed_value

from alpha_data._sa_internals import add_persistent, set_attribute_loaders
from alpha_data.cache.codec import ColumnCodec, Corrupt, Shape
from alpha_data.errors import DataLayerError
from alpha_data.models.json import track_json

__all__ = ["InSession", "SecretNotLoadedError", "hide_secrets", "materialize"]


class SecretNotLoadedError(DataLayerError):
    """A secret column was read on an object that came from a cached read."""


class InSession(Exception):
    """An object of the entry is already in the session (its copy wins)."""


class _HiddenSecret:
    """Per-instance loader of a hidden secret: raises on access, silent in passive checks."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, state: Any, passive: PassiveFlag) -> Any:
        if not passive & PassiveFlag.SQL_OK:
            return LoaderCallableStatus.PASSIVE_NO_RESULT
        raise SecretNotLoadedError(
            f"{state.class_.__name__}.{self.name} is secret and not loaded on objects from "
            f"cached reads; read with cached=False or "
            f"`await session.refresh(obj, [{self.name!r}])`"
        )


@functools.cache
def _hidden(names: tuple[str, ...]) -> dict[str, _HiddenSecret]:
    return {name: _HiddenSecret(name) for name in names}


def hide_secrets(obj: Any, names: Iterable[str]) -> None:
    """Unload ``names`` on ``obj`` so that reading them raises SecretNotLoadedError."""
    set_attribute_loaders(obj, {name: _HiddenSecret(name) for name in names})


_Built = list[tuple[Any, Any, ColumnCodec]]


def _build(codec: ColumnCodec, values: Any, out: _Built) -> Any:
    obj = codec.new_instance()
    codec.fill(obj.__dict__, values)
    track_json(obj)
    out.append((obj, codec.identity_key((values[codec.pk_index],)), codec))
    return obj


def _node(shape: Shape, node: Any, out: _Built, identity_map: Any) -> Any:
    if type(node) is not list or len(node) != 1 + len(shape.related):
        raise Corrupt("bad node")
    codec = shape.codec
    if not shape.related and type(node[0]) is list and len(node[0]) == len(codec.keys):
        # Like a query without populate_existing: the session's copy wins.
        try:
            existing = identity_map.get(codec.identity_key((node[0][codec.pk_index],)))
        except TypeError:
            raise Corrupt("bad primary key") from None
        if existing is not None:
            return existing
    obj = _build(codec, node[0], out)
    for (name, codec, uselist), value in zip(shape.related, node[1:], strict=True):
        if uselist:
            if type(value) is not list:
                raise Corrupt("bad collection")
            related: Any = [_build(codec, item, out) for item in value]
        else:
            related = None if value is None else _build(codec, value, out)
        set_committed_value(obj, name, related)
    return obj


def _attach(session: Session, built: _Built) -> None:
    identity_map = session.identity_map
    for _, key, _ in built:
        if key in identity_map:
            raise InSession(key)
    for obj, key, codec in built:
        add_persistent(session, obj, key)  # the loader's way: no cascades, no autobegin
        if codec.secrets:  # a new object: nothing loaded or expired to undo
            set_attribute_loaders(obj, _hidden(codec.secrets), fresh=True)


def materialize(shape: Shape, payload: Any, session: Session | AsyncSession) -> Any:
    """ORM objects for ``payload``, attached to ``session``.

    An object the session already holds is returned as it is in the
    session (as a query would); when the read loads relationships, such an
    object raises InSession instead (the caller then queries). Raises
    Corrupt for a malformed payload; nothing is attached in either case.
    """
    if payload is None:
        return None
    built: _Built = []
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    identity_map = sync.identity_map
    if shape.page:
        if type(payload) is not list or len(payload) != 2 or type(payload[0]) is not list:
            raise Corrupt("expected [items, next_cursor]")
        nodes, cursor = payload
        if cursor is not None and type(cursor) is not str:
            raise Corrupt("bad cursor")
        items = [_node(shape, node, built, identity_map) for node in nodes]
        result: Any = _page(items, cursor)
    elif shape.many:
        if type(payload) is not list:
            raise Corrupt("expected a list")
        result = [_node(shape, node, built, identity_map) for node in payload]
    else:
        result = _node(shape, payload, built, identity_map)
    _attach(sync, built)
    return result


def _page(items: list[Any], cursor: str | None) -> Any:
    """A ``Page`` (imported here: repositories import the cache, not the other way)."""
    from alpha_data.repositories.pagination import Page

    return Page(items, cursor)
