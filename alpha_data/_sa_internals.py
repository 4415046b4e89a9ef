"""Every use of SQLAlchemy's non-public API in alpha_data, in one place.

alpha_data builds ORM objects straight from rows (the cache, the read-only
fast paths, bulk INSERT … RETURNING) the way SQLAlchemy's own loader does,
and counts pool waits. Those steps need attributes SQLAlchemy does not
document. They are written once here, so that a SQLAlchemy upgrade breaks
one small module, and tests/test_sa_internals.py checks each of them on both
SQLAlchemy legs of the test matrix (2.0.31 and the newest 2.x).

What is used, and what it does:

* ``IdentityMap._add_unpresent(state, key)``: the loader's door into the
  identity map (no cascades, no autobegin, no save-update events). When a
  release lacks it, the public ``identity_map.add(state)`` is used.
* ``InstanceState.key`` / ``session_id``: what makes an instance persistent in
  one session (set by the loader, not by ``Session.add``).
* ``InstanceState._commit_all(dict)``: "these values are loaded, nothing is
  pending" after a RETURNING wrote them into the instance.
* ``InstanceState.callables`` / ``expired_attributes``: per-instance attribute
  loaders (hidden secrets raise instead of loading).
* ``Session._is_clean()``: no pending, dirty or deleted objects.
* ``QueuePool._overflow`` / ``_max_overflow`` / ``_pool``: whether a checkout
  will have to wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.pool import QueuePool

__all__ = [
    "add_persistent",
    "build_persistent",
    "mark_loaded",
    "pool_checkout_must_wait",
    "session_has_pending",
    "set_attribute_loaders",
]


def add_persistent(session: Session, obj: Any, key: Any) -> None:
    """Make ``obj`` persistent in ``session`` under identity ``key``, as the ORM loader does.

    The caller has checked that ``key`` is not in the identity map yet.
    """
    state: Any = instance_state(obj)
    state.key = key
    state.session_id = session.hash_key
    identity_map: Any = session.identity_map
    add_unpresent = getattr(identity_map, "_add_unpresent", None)
    if add_unpresent is not None:
        add_unpresent(state, key)
    else:  # pragma: no cover - a SQLAlchemy release without the loader's door
        identity_map.add(state)


def build_persistent(
    mapper: Mapper[Any], values: Mapping[str, Any] | Iterable[tuple[str, Any]]
) -> Any:
    """A new instance of ``mapper``'s class holding ``values`` (no ``__init__``, no events)."""
    obj = mapper.class_manager.new_instance()
    obj.__dict__.update(values)
    return obj


def mark_loaded(obj: Any) -> None:
    """Mark every value in ``obj.__dict__`` as loaded from the database (no pending change)."""
    state: Any = instance_state(obj)
    state._commit_all(obj.__dict__)


def set_attribute_loaders(obj: Any, loaders: Mapping[str, Any], *, fresh: bool = False) -> None:
    """Install per-instance loaders for attributes of ``obj`` (and unload their values).

    ``fresh`` says ``obj`` was just built (nothing loaded or expired to undo).
    """
    state: Any = instance_state(obj)
    if fresh:
        state.callables = dict(loaders)
        return
    if "callables" not in state.__dict__:
        state.callables = {}
    for name, loader in loaders.items():
        obj.__dict__.pop(name, None)
        state.expired_attributes.discard(name)
        state.callables[name] = loader


def session_has_pending(session: Session) -> bool:
    """Unflushed changes in ``session`` (a real query would autoflush them first)."""
    return not session._is_clean()


def pool_checkout_must_wait(pool: QueuePool) -> bool:
    """True when a checkout from ``pool`` finds no idle connection and no overflow left."""
    max_overflow: int = pool._max_overflow
    overflow: int = pool._overflow
    return max_overflow >= 0 and overflow >= max_overflow and pool._pool.empty()
