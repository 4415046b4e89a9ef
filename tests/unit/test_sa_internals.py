"""alpha_data._sa_internals against the installed SQLAlchemy (run on both legs of the matrix).

Each helper leans on an attribute SQLAlchemy does not document; these tests
fail first when a release changes one of them. No server: sessions without a
bind never emit SQL here, and the pool's connections are fakes.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy
from sqlalchemy import inspect
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.pool import QueuePool

from alpha_data._sa_internals import (
    add_persistent,
    build_persistent,
    mark_loaded,
    pool_checkout_must_wait,
    session_has_pending,
    set_attribute_loaders,
)
from alpha_data.models import Portfolio

T0 = datetime(2026, 1, 2, tzinfo=timezone.utc)
VALUES = {
    "id": 5,
    "name": "book",
    "description": None,
    "version": 1,
    "created_at": T0,
    "updated_at": T0,
}


@pytest.fixture(autouse=True, scope="module")
def _configured() -> None:
    """Instrumentation is complete once mappers are configured (alpha_data's loaders do it)."""
    configure_mappers()


def test_the_installed_sqlalchemy_is_a_supported_2x() -> None:
    major, minor = (int(x) for x in sqlalchemy.__version__.split(".")[:2])
    assert (major, minor) in ((2, 0), (2, 1))


def test_built_object_is_persistent_without_init_events_or_sql() -> None:
    session = Session()
    obj = build_persistent(Portfolio.__mapper__, VALUES)
    key = Portfolio.__mapper__.identity_key_from_primary_key((5,))
    add_persistent(session, obj, key)
    state = inspect(obj)
    assert state.persistent and state.key == key and state.session is session
    assert session.get(Portfolio, 5) is obj  # found in the identity map, no SQL
    assert not session_has_pending(session)  # no cascade, nothing to flush
    assert not state.attrs.name.history.has_changes()
    assert obj.name == "book" and obj.description is None


def test_session_has_pending_sees_new_dirty_and_deleted() -> None:
    session = Session()
    assert not session_has_pending(session)
    session.add(Portfolio(name="new", version=1))
    assert session_has_pending(session)
    session.expunge_all()
    obj = build_persistent(Portfolio.__mapper__, VALUES)
    add_persistent(session, obj, Portfolio.__mapper__.identity_key_from_primary_key((5,)))
    obj.name = "changed"
    assert session_has_pending(session)


def test_mark_loaded_makes_written_values_loaded_ones() -> None:
    """bulk_insert: RETURNING values written into new objects, then persistent and clean."""
    session = Session()
    obj = Portfolio(name="book", version=1)
    assert inspect(obj).attrs.name.history.has_changes()
    obj.__dict__.update(VALUES)
    mark_loaded(obj)
    add_persistent(session, obj, Portfolio.__mapper__.identity_key_from_primary_key((5,)))
    assert not inspect(obj).attrs.name.history.has_changes()
    assert obj.id == 5 and obj.created_at == T0
    assert not session_has_pending(session)
    obj.name = "renamed"  # later changes are tracked as usual
    assert session_has_pending(session)


class Hidden(Exception):
    pass


def _raise_hidden(state: object, passive: object) -> object:
    from sqlalchemy.orm import LoaderCallableStatus, PassiveFlag

    if not passive & PassiveFlag.SQL_OK:  # type: ignore[operator]
        return LoaderCallableStatus.PASSIVE_NO_RESULT
    raise Hidden


@pytest.mark.parametrize("fresh", [True, False])
def test_attribute_loaders_replace_the_value(fresh: bool) -> None:
    session = Session()
    values = dict(VALUES)
    if fresh:
        values.pop("description")
    obj = build_persistent(Portfolio.__mapper__, values)
    add_persistent(session, obj, Portfolio.__mapper__.identity_key_from_primary_key((5,)))
    set_attribute_loaders(obj, {"description": _raise_hidden}, fresh=fresh)
    assert "description" in inspect(obj).unloaded
    with pytest.raises(Hidden):
        _ = obj.description
    assert obj.name == "book"  # other attributes untouched


class FakeConnection:
    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_pool_checkout_must_wait_tracks_idle_and_overflow() -> None:
    pool = QueuePool(FakeConnection, pool_size=1, max_overflow=1, timeout=0.1)
    assert not pool_checkout_must_wait(pool)
    first = pool.connect()
    assert not pool_checkout_must_wait(pool)  # one overflow slot left
    second = pool.connect()
    assert pool_checkout_must_wait(pool)
    second.close()
    assert not pool_checkout_must_wait(pool)  # an idle connection again
    first.close()
    pool.dispose()


def test_a_pool_without_overflow_limit_never_waits() -> None:
    pool = QueuePool(FakeConnection, pool_size=1, max_overflow=-1)
    held = [pool.connect() for _ in range(3)]
    assert not pool_checkout_must_wait(pool)
    for conn in held:
        conn.close()
    pool.dispose()
