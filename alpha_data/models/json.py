"""JSON columns whose in-place changes are saved: ``alert.tags.append("x")`` is a change.

SQLAlchemy's plain JSON types compare by identity, so mutating a loaded list
or dict in place is invisible to the unit of work and silently not saved.
Every JSON column of the models uses ``TrackedJSON``: a list value is held
as a ``MutableList`` and a dict as a ``MutableDict`` (SQLAlchemy's Mutable
extension), whether it was loaded by the ORM, assigned, or refreshed after a
flush; their top-level changes flag the attribute as modified. Scalars (a
JSON ``true`` or ``3``) are immutable and stay as they are, so any JSON
value a column held before is still readable. Nested containers are not
tracked (assign a new value for those).

``as_mutable`` is not used because it accepts only its one container type
(a scalar in a list column would fail to load). The layer's fast paths (the
key-lookup row loader, bulk INSERT … RETURNING, objects materialised from
the cache) write values straight into ``__dict__`` as the ORM loader does;
they call ``track_json`` so those objects track changes too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import Mutable, MutableDict, MutableList
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import instance_state

__all__ = ["JsonList", "TrackedJSON", "track_json"]

#: The JSONB type of every model JSON column (identified by identity, like as_mutable).
TrackedJSON = JSONB()  # type: ignore[no-untyped-call,unused-ignore]  # (untyped in 2.0)
#: The name the models use for list-valued JSON columns (tags, permissions).
JsonList = TrackedJSON

_KEYS: dict[type[Any], tuple[str, ...]] = {}


def _wrap(value: Any) -> Any:
    """``value`` as a tracked container (lists and dicts); anything else unchanged."""
    if isinstance(value, Mutable) or value is None:
        return value
    if isinstance(value, list):
        return MutableList(value)
    if isinstance(value, dict):
        return MutableDict(value)
    return value


def _adopt(state: Any, key: str) -> None:
    """Wrap the value in ``state.dict[key]`` and make ``state`` its parent."""
    value = state.dict.get(key)
    wrapped = _wrap(value)
    if wrapped is not value:
        state.dict[key] = wrapped
    if isinstance(wrapped, Mutable):
        wrapped._parents[state] = key


def _listen(attribute: Any) -> None:
    key = attribute.key

    def load(state: Any, *args: Any) -> None:
        _adopt(state, key)

    def load_attrs(state: Any, context: Any, attrs: Any) -> None:
        if not attrs or key in attrs:
            _adopt(state, key)

    def set_(state: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
        if value is oldvalue:
            return value
        value = _wrap(value)
        if isinstance(value, Mutable):
            value._parents[state] = key
        if isinstance(oldvalue, Mutable):
            oldvalue._parents.pop(state, None)
        return value

    owner = attribute.class_
    event.listen(owner, "load", load, raw=True, propagate=True)
    event.listen(owner, "refresh", load_attrs, raw=True, propagate=True)
    event.listen(owner, "refresh_flush", load_attrs, raw=True, propagate=True)
    event.listen(attribute, "set", set_, raw=True, retval=True, propagate=True)


@event.listens_for(Mapper, "mapper_configured")
def _track_json_columns(mapper: Mapper[Any], class_: type[Any]) -> None:
    for prop in mapper.column_attrs:
        attribute = getattr(class_, prop.key)
        if prop.columns[0].type is TrackedJSON and attribute.class_ is class_:
            _listen(attribute)


def _tracked_keys(model: type[Any]) -> tuple[str, ...]:
    """Attribute keys of ``model``'s tracked JSON columns (computed once)."""
    keys = _KEYS.get(model)
    if keys is None:
        keys = _KEYS[model] = tuple(
            attr.key for attr in inspect(model).column_attrs if attr.columns[0].type is TrackedJSON
        )
    return keys


def track_json(obj: Any) -> None:
    """Wrap JSON values written straight into ``obj.__dict__`` so in-place changes are saved.

    What the ``load`` listener does for ORM-loaded rows; a no-op for models
    without JSON columns.
    """
    keys = _tracked_keys(type(obj))
    if keys:
        state = instance_state(obj)
        for key in keys:
            _adopt(state, key)
