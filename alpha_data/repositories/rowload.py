"""Read-only fast path: load mapped objects straight from driver rows.

A read-only unit of work that looks up rows by key does not need the ORM's
query machinery (statement compilation per call, result processing, loader
contexts): the SQL is compiled once per model, runs through the session's
own connection (so engine events — statement counts, slow-query log,
tracing — still see it), and each row is written into a new instance the way
the ORM's loader does it, then placed in the session's identity map.

Used only when the session does not already hold the object; otherwise the
regular ORM path runs, so identity-map semantics are unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Enum as SAEnum
from sqlalchemy import bindparam, inspect, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state, set_committed_value

__all__ = ["RowLoader", "row_loader"]

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


def _converter(column: Any) -> Callable[[Any], Any] | None:
    """What turns a driver value into the attribute value (None: as is)."""
    if isinstance(column.type, SAEnum) and column.type.enum_class is not None:
        enum_class = column.type.enum_class
        return lambda v: None if v is None else enum_class(v)
    return None


class RowLoader:
    """Compiled lookups and row → instance for one mapped class."""

    def __init__(self, model: type[Any]) -> None:
        self.model = model
        self.mapper: Any = inspect(model)
        self.columns = list(self.mapper.columns)
        self.keys = [self.mapper.get_property_by_column(c).key for c in self.columns]
        self.converters = [
            (i, conv) for i, c in enumerate(self.columns) if (conv := _converter(c)) is not None
        ]
        (self.pk,) = self.mapper.primary_key
        self.pk_index = self.columns.index(self.pk)

    @functools.cache  # noqa: B019 - loaders live as long as their model
    def sql_where(self, column_key: str, order_by: str | None = None) -> str:
        """``SELECT <all columns> FROM <table> WHERE <column> = $1 [ORDER BY ...]``."""
        table = self.mapper.local_table
        stmt = select(*self.columns).where(table.c[column_key] == bindparam("value"))
        if order_by is not None:
            stmt = stmt.order_by(table.c[order_by], self.pk)
        return str(stmt.compile(dialect=_DIALECT))

    def identity_key(self, pk: Any) -> Any:
        """The identity-map key of the row with primary key ``pk``."""
        return self.mapper.identity_key_from_primary_key((pk,))

    def build(self, session: Session, row: Sequence[Any]) -> Any:
        """A persistent instance for ``row``, added to ``session``'s identity map."""
        values = list(row)
        for index, convert in self.converters:
            values[index] = convert(values[index])
        obj = self.mapper.class_manager.new_instance()
        obj.__dict__.update(zip(self.keys, values, strict=True))
        state: Any = instance_state(obj)
        key = self.identity_key(values[self.pk_index])
        state.key = key
        state.session_id = session.hash_key
        session.identity_map._add_unpresent(state, key)  # the ORM loader's own door
        return obj

    async def fetch(
        self, session: AsyncSession, column_key: str, value: Any, order_by: str | None = None
    ) -> list[Sequence[Any]]:
        """Rows where ``column_key = value`` on the session's connection."""
        conn = await session.connection()
        result = await conn.exec_driver_sql(self.sql_where(column_key, order_by), (value,))
        return list(result.all())


_LOADERS: dict[type[Any], RowLoader] = {}


def row_loader(model: type[Any]) -> RowLoader:
    """The loader of ``model`` (built once)."""
    loader = _LOADERS.get(model)
    if loader is None:
        loader = _LOADERS[model] = RowLoader(model)
    return loader


def holds_any(session: Session, loader: RowLoader, rows: Sequence[Sequence[Any]]) -> bool:
    """Whether the session already holds one of the rows' objects."""
    identity_map = session.identity_map
    if not len(identity_map):
        return False
    return any(loader.identity_key(r[loader.pk_index]) in identity_map for r in rows)


def set_loaded(obj: Any, name: str, value: Any) -> None:
    """Mark a relationship as loaded with ``value`` (no SQL, no history)."""
    set_committed_value(obj, name, value)
