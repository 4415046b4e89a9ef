"""What a unit of work dirtied, recorded as tags and delivered after its commit.

A ``CacheScope`` is bound to one session (``session.info``). Two session
listeners fill it, installed with ``listen(session_class)`` on alpha_data's
own session class only (``alpha_data.uow.DataSession`` and its subclasses):
a host application's Sessions never run them.

* ``after_flush``: every inserted, updated or deleted ORM object adds the
  tags its model declared with ``invalidated_by`` (old and new values of
  the tagged columns); a model without a declaration adds its table epoch.
* ``do_orm_execute``: a Core INSERT/UPDATE/DELETE adds the tags passed with
  ``invalidates(stmt, Model, ...)``, or else its table epoch.

Both also add the tags of rows PostgreSQL deletes or re-keys itself through
ON DELETE/UPDATE CASCADE or SET NULL (``alpha_data.cache.cascade``).

Repositories that learn which rows changed only from RETURNING call
``invalidate(session, Model, ...)``. The unit of work delivers the tags
after COMMIT succeeded (``CacheScope.deliver``) and drops them on rollback.
Raw ``text()`` writes are not seen: call ``invalidate`` for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, PassiveFlag, Session
from sqlalchemy.orm.attributes import get_history, instance_state

from alpha_data.cache.cascade import cascade_tags, cascades
from alpha_data.cache.tags import epoch, row_tags, table_is_cached

if TYPE_CHECKING:
    from alpha_data.cache.cache import Cache

__all__ = [
    "REFRESH_KEY",
    "ROUTE_KEY",
    "SCOPE_KEY",
    "CacheScope",
    "invalidate",
    "invalidates",
    "listen",
    "replica_position",
    "scope_of",
]

#: Where a session keeps its CacheScope (``session.info[SCOPE_KEY]``).
SCOPE_KEY = "alpha_data.cache_scope"
#: Set in ``session.info`` while a cached read queries PostgreSQL after a miss.
REFRESH_KEY = "alpha_data.cache_refresh"
#: Where a read router (alpha_data.routing) keeps a session's route; an object
#: whose ``replay_lsn`` is not None means the session read a streaming replica.
ROUTE_KEY = "alpha_data.route"


def replica_position(session: Session) -> int | None:
    """None when ``session`` read only the primary; else the replay LSN its replica
    had at least reached (it may miss commits whose invalidations were delivered:
    a result is stored only if this covers its tags' LSNs)."""
    lsn: int | None = getattr(session.info.get(ROUTE_KEY), "replay_lsn", None)
    return lsn


_OPTION = "alpha_data_invalidates"

S = TypeVar("S")


class CacheScope:
    """The cache as one unit of work sees it: may it read, and which tags has it dirtied."""

    def __init__(self, cache: Cache, *, reads: bool = True) -> None:
        self.cache = cache
        self.reads = reads and cache.enabled
        self.tags: set[str] = set()

    def bind(self, session: AsyncSession | Session) -> None:
        """Attach to ``session`` so listeners and cached reads find this scope."""
        session.info[SCOPE_KEY] = self

    def record(self, tags: Iterable[str]) -> None:
        """Remember tags to invalidate after the commit."""
        self.tags.update(tags)

    def dirtied(self, tags: Iterable[str]) -> bool:
        """True if this unit of work wrote something ``tags`` depend on (read-your-writes)."""
        return bool(self.tags) and not self.tags.isdisjoint(tags)

    def discard(self) -> None:
        """Forget everything recorded (rollback)."""
        self.tags.clear()

    async def deliver(self) -> None:
        """Invalidate what was recorded (after COMMIT); never raises for a cache outage."""
        if self.tags:
            tags, self.tags = self.tags, set()
            await self.cache.invalidate(tags)


def scope_of(session: AsyncSession | Session) -> CacheScope | None:
    """The scope bound to ``session``, if any."""
    scope: CacheScope | None = session.info.get(SCOPE_KEY)
    return scope


def invalidate(session: AsyncSession | Session, model: type[Any], **values: Any) -> None:
    """Record that the row of ``model`` with these attribute values changed.

    Pass every attribute the model's ``invalidated_by`` rule uses (for
    ``User``: id, username, email); a missing one invalidates the whole table.
    """
    scope = scope_of(session)
    if scope is not None:
        scope.record(row_tags(model, {k: (v,) for k, v in values.items()}.get))


def invalidates(statement: S, model: type[Any], **values: Any) -> S:
    """``statement`` marked as changing the row of ``model`` with these values.

    With no values the statement is marked as handled: the caller records
    its rows itself with ``invalidate`` (e.g. from RETURNING).
    """
    option = (model, tuple(sorted(values.items())))
    marked: S = statement.execution_options(**{_OPTION: option})  # type: ignore[attr-defined]
    return marked


def _object_tags(obj: Any, deleted: bool) -> list[str]:
    """Tags of a flushed object, from its current and (for updates) previous values.

    With the tags of the rows PostgreSQL changes through its foreign keys:
    all of them for a deleted object, those whose key changed for an update.
    """
    state: Any = instance_state(obj)
    mapper = state.mapper
    loaded = state.dict
    pk_key = mapper.get_property_by_column(mapper.primary_key[0]).key

    def values(name: str) -> list[Any] | None:
        found: list[Any] = []
        if name in loaded:
            found.append(loaded[name])
        elif name == pk_key and state.key is not None:
            found.append(state.key[1][0])
        if name in mapper.attrs:
            history = get_history(obj, name, passive=PassiveFlag.PASSIVE_NO_INITIALIZE)
            if state.key is not None and history.added and not history.deleted:
                return None  # changed, but the old value was never loaded: unknown
            found.extend(history.deleted)
        return found or None

    model = mapper.class_
    tags = row_tags(model, values)
    if deleted:
        tags += cascade_tags(model, values, "delete")
    elif state.key is not None and _rekeyed(obj, model):
        tags += cascade_tags(model, values, "update")
    return tags


def _rekeyed(obj: Any, model: type[Any]) -> bool:
    """True if an updated object changed a column that cascading foreign keys refer to."""
    for cascade in cascades(model, "update"):
        if not cascade.pairs:
            return True  # an unmapped child table: cannot tell which key it uses
        for _, parent_key in cascade.pairs:
            if get_history(obj, parent_key, passive=PassiveFlag.PASSIVE_NO_INITIALIZE).deleted:
                return True
    return False


def listen(session_class: type[Session]) -> None:
    """Record cache invalidations in sessions of ``session_class`` (and its subclasses).

    alpha_data calls it for its own session class; never pass SQLAlchemy's
    ``Session`` (that would run these listeners in every Session of the process).
    """
    if session_class is Session:
        raise ValueError("bind the cache listeners to a Session subclass, never Session itself")
    for name, fn in (("after_flush", _record_flush), ("do_orm_execute", _on_execute)):
        if not event.contains(session_class, name, fn):
            event.listen(session_class, name, fn)


def _record_flush(session: Session, flush_context: Any) -> None:
    scope = session.info.get(SCOPE_KEY)
    if scope is None:
        return
    for collection in (session.new, session.dirty):
        for obj in collection:
            scope.record(_object_tags(obj, deleted=False))
    for obj in session.deleted:
        scope.record(_object_tags(obj, deleted=True))


def _on_execute(state: ORMExecuteState) -> None:
    """SELECTs of a cached read's miss refresh what the session holds; DML records tags."""
    if state.is_select:
        if state.session.info.get(REFRESH_KEY):
            state.update_execution_options(populate_existing=True)
        return
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    scope = state.session.info.get(SCOPE_KEY)
    if scope is None:
        return
    declared = state.execution_options.get(_OPTION)
    if declared is not None:
        model, values = declared
        lookup = {k: (v,) for k, v in values}.get
        if values:
            scope.record(row_tags(model, lookup))
        if not state.is_insert:  # rows referring to these may go or change with them
            scope.record(cascade_tags(model, lookup, "delete" if state.is_delete else "update"))
        return
    target = getattr(state.statement, "table", None)
    table = getattr(target, "name", None)
    if table is None:
        raise TypeError("cannot tell which table this statement writes; mark it with invalidates()")
    if table_is_cached(str(table)):
        scope.record([epoch(str(table))])
    model = _mapped_class(state, target)
    if model is not None and not state.is_insert:
        scope.record(cascade_tags(model, _unknown, "delete" if state.is_delete else "update"))


def _unknown(name: str) -> None:
    return None


def _mapped_class(state: ORMExecuteState, table: Any) -> type[Any] | None:
    """The ORM class a DML statement targets, if it names one."""
    mapper = state.bind_mapper
    if mapper is None:
        return None
    local: Any = mapper.local_table  # the statement holds an annotated copy of the table
    if (local.name, local.schema) == (table.name, getattr(table, "schema", None)):
        return mapper.class_
    return None
