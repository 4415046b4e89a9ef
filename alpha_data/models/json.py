"""JSON columns whose in-place changes are saved: ``alert.tags.append("x")`` is a change.

SQLAlchemy's plain JSON types compare by identity, so mutating a loaded list
or dict in place is invisible to the unit of work and silently not saved.
Every JSON column of the models uses one of the types below, built with the
Mutable extension (``MutableList``/``MutableDict.as_mutable``): values loaded
by the ORM, assigned, or refreshed after a flush are wrapped in tracking
containers.

The layer's own fast paths (the key-lookup row loader, bulk INSERT …
RETURNING, objects materialised from the cache) write values straight into
an instance's ``__dict__`` as the ORM loader does; they call ``track_json``
so those objects track in-place changes too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import Mutable, MutableDict, MutableList
from sqlalchemy.orm.attributes import instance_state

__all__ = ["JsonDict", "JsonList", "track_json"]

#: JSONB holding a list (e.g. tags, permissions); ``append``/``remove``/... are saved.
JsonList = MutableList.as_mutable(JSONB())
#: JSONB holding an object; ``obj.field["k"] = v`` is saved (top-level keys).
JsonDict = MutableDict.as_mutable(JSONB())

_TRACKED: dict[int, type[Mutable]] = {id(JsonList): MutableList, id(JsonDict): MutableDict}


_KEYS: dict[type[Any], tuple[tuple[str, type[Mutable]], ...]] = {}


def _mutable_keys(model: type[Any]) -> tuple[tuple[str, type[Mutable]], ...]:
    """(attribute key, Mutable class) of ``model``'s tracked JSON columns (computed once)."""
    keys = _KEYS.get(model)
    if keys is None:
        keys = _KEYS[model] = tuple(
            (attr.key, kind)
            for attr in inspect(model).column_attrs
            if (kind := _TRACKED.get(id(attr.columns[0].type))) is not None
        )
    return keys


def track_json(obj: Any) -> None:
    """Wrap JSON values written straight into ``obj.__dict__`` so in-place changes are saved.

    What the Mutable extension's ``load`` listener does for ORM-loaded rows;
    a no-op for models without tracked JSON columns.
    """
    keys = _mutable_keys(type(obj))
    if not keys:
        return
    state: Any = instance_state(obj)
    values = state.dict
    for key, kind in keys:
        value = values.get(key)
        if value is None:
            continue
        if not isinstance(value, kind):
            value = values[key] = kind.coerce(key, value)
        value._parents[state] = key
