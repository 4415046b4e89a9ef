"""Rows PostgreSQL changes on its own: ON DELETE / ON UPDATE CASCADE and SET NULL.

Deleting a user whose API keys go with it (``ondelete="CASCADE"``) changes
rows the session never saw, so no flush or statement of the unit of work
names them. Their cached reads are found from the foreign keys in the
metadata instead: for each foreign key that refers to the changed table with
a CASCADE, SET NULL or SET DEFAULT action, the child model's own tag rule is
applied to a row whose foreign-key attributes hold the parent's (old and, for
SET NULL, new) key values. A rule that needs any other attribute, a child
table without a mapped class, and rows deleted further down a cascade fall
back to the child table's epoch: every cached read of that table.

This covers the library's tables and an application's tables on
``alpha_data.models.Base`` alike (same metadata, same registry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Table, inspect

from alpha_data.cache.tags import epoch, row_tags, table_is_cached

__all__ = ["Cascade", "cascade_tags", "cascades"]

Action = Literal["delete", "update"]
Values = Callable[[str], Iterable[Any] | None]

_ACTIONS = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})


@dataclass(frozen=True)
class Cascade:
    """One foreign key whose rows PostgreSQL changes when the referred row changes."""

    child_table: str
    #: The mapped class of the child table (None: a table without one).
    child: type[Any] | None
    #: (child attribute, parent attribute) for each column of the foreign key.
    pairs: tuple[tuple[str, str], ...]
    #: CASCADE, SET NULL or SET DEFAULT.
    action: str


_found: dict[tuple[Table, Action], tuple[int, tuple[Cascade, ...]]] = {}


def cascades(parent: type[Any], on: Action) -> tuple[Cascade, ...]:
    """The foreign keys whose rows change when a row of ``parent`` is deleted/re-keyed."""
    mapper: Any = inspect(parent)
    table: Table = mapper.local_table
    metadata = table.metadata
    seen = _found.get((table, on))
    if seen is not None and seen[0] == len(metadata.tables):
        return seen[1]
    found = tuple(_scan(mapper, table, on))
    _found[(table, on)] = (len(metadata.tables), found)  # recomputed when tables are added
    return found


def _scan(parent_mapper: Any, table: Table, on: Action) -> Iterable[Cascade]:
    by_table = {m.local_table: m for m in parent_mapper.registry.mappers if m.inherits is None}
    for child_table in table.metadata.tables.values():
        for fk in child_table.foreign_key_constraints:
            if fk.referred_table is not table:
                continue
            rule = fk.ondelete if on == "delete" else fk.onupdate
            action = (rule or "").upper()
            if action not in _ACTIONS:
                continue
            child_mapper = by_table.get(child_table)
            pairs: tuple[tuple[str, str], ...] = ()
            if child_mapper is not None:
                pairs = tuple(
                    (
                        child_mapper.get_property_by_column(element.parent).key,
                        parent_mapper.get_property_by_column(element.column).key,
                    )
                    for element in fk.elements
                )
            child = child_mapper.class_ if child_mapper is not None else None
            yield Cascade(str(child_table.name), child, pairs, action)


def cascade_tags(parent: type[Any], values: Values, on: Action) -> list[str]:
    """Tags of the rows PostgreSQL changes when the ``parent`` row ``values`` gives changes.

    ``values(name)`` gives the parent's old key values (None: unknown, e.g.
    a bulk DELETE without RETURNING).
    """
    tags: list[str] = []
    _collect(parent, values, on, tags, {_table_of(parent)})
    return tags


def _collect(
    parent: type[Any], values: Values, on: Action, tags: list[str], seen: set[str]
) -> None:
    for cascade in cascades(parent, on):
        if cascade.child is None:
            tags.append(epoch(cascade.child_table))
            continue
        if not table_is_cached(cascade.child_table):
            continue  # declared: no cached read uses this table
        tags.extend(row_tags(cascade.child, _child_values(cascade, values)))
        if on == "delete" and cascade.action == "CASCADE" and cascade.child_table not in seen:
            # The deleted children's own children: their keys were never read.
            seen.add(cascade.child_table)
            _collect(cascade.child, _unknown, "delete", tags, seen)


def _child_values(cascade: Cascade, parent_values: Values) -> Values:
    """A child row's attribute values as far as the foreign key tells them."""
    columns = dict(cascade.pairs)

    def values(name: str) -> Iterable[Any] | None:
        parent_key = columns.get(name)
        if parent_key is None or cascade.action == "SET DEFAULT":
            return None  # not part of the key, or set to a default we do not know
        found = parent_values(parent_key)
        if found is None:
            return None
        old = list(found)
        return [*old, None] if cascade.action == "SET NULL" else old

    return values


def _unknown(name: str) -> None:
    return None


def _table_of(model: type[Any]) -> str:
    table: Any = inspect(model).local_table
    return str(table.name)
