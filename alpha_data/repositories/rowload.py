"""Fast paths around the ORM's per-object machinery: key lookups and bulk inserts.

A read-only unit of work that looks up rows by key does not need the ORM's
query machinery (statement compilation per call, result processing, loader
contexts): the SQL is compiled once per model, runs through the session's
own connection (so engine events — statement counts, slow-query log,
tracing — still see it), and each row is written into a new instance the way
the ORM's loader does it, then placed in the session's identity map.

Used only when the session does not already hold the object; otherwise the
regular ORM path runs, so identity-map semantics are unchanged.

Bulk inserts of new, plain objects (no relationships set, the same columns
given on each) go out as one Core ``INSERT … RETURNING`` executed in
insertmanyvalues batches; the returned rows are written back into the very
objects passed in, which then become persistent in the session — what a
flush does, without its per-object bookkeeping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Enum as SAEnum
from sqlalchemy import bindparam, insert, inspect, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.attributes import instance_state

from alpha_data._sa_internals import add_persistent, build_persistent, mark_loaded
from alpha_data.models.json import track_json

__all__ = [
    "RowLoader",
    "bulk_insert",
    "bulk_insert_keys",
    "fetch_with_children",
    "row_loader",
]

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
        configure_mappers()  # relationships get their loaders only when configured
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
        obj = build_persistent(self.mapper, zip(self.keys, values, strict=True))
        track_json(obj)
        add_persistent(session, obj, self.identity_key(values[self.pk_index]))
        return obj

    async def fetch(
        self, session: AsyncSession, column_key: str, value: Any, order_by: str | None = None
    ) -> list[Sequence[Any]]:
        """Rows where ``column_key = value`` on the session's connection."""
        return await session.run_sync(_fetch_all, self.sql_where(column_key, order_by), value)


@functools.cache
def _sql_with_children(parent: RowLoader, child: RowLoader, foreign_key: str, order_by: str) -> str:
    """``SELECT parent.*, child.* FROM parent LEFT JOIN child ... WHERE parent.pk = $1``."""
    parent_table, child_table = parent.mapper.local_table, child.mapper.local_table
    joined = parent_table.outerjoin(child_table, child_table.c[foreign_key] == parent.pk)
    stmt = (
        select(*parent.columns, *child.columns)
        .select_from(joined)
        .where(parent.pk == bindparam("value"))
        .order_by(child_table.c[order_by], child.pk)
    )
    return str(stmt.compile(dialect=_DIALECT))


async def fetch_with_children(
    session: AsyncSession,
    parent: RowLoader,
    child: RowLoader,
    foreign_key: str,
    pk: Any,
    order_by: str,
) -> tuple[Sequence[Any] | None, list[Sequence[Any]]]:
    """The parent row with primary key ``pk`` and its children, in one statement.

    One LEFT JOIN instead of two queries: one round trip, and parent and
    children come from one snapshot (two autocommit reads would each see
    their own). Returns (None, []) when there is no parent.
    """
    sql = _sql_with_children(parent, child, foreign_key, order_by)
    rows = await session.run_sync(_fetch_all, sql, pk)
    if not rows:
        return None, []
    width = len(parent.columns)
    child_pk = width + child.pk_index
    children: list[Sequence[Any]] = [row[width:] for row in rows if row[child_pk] is not None]
    return rows[0][:width], children


def _fetch_all(session: Session, sql: str, value: Any) -> list[Sequence[Any]]:
    """Connection, statement and rows in one greenlet hop (``AsyncSession.run_sync``)."""
    return list(session.connection().exec_driver_sql(sql, (value,)).all())


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


def bulk_insert_keys(model: type[Any], objs: Sequence[Any]) -> tuple[str, ...] | None:
    """The column keys every object sets, or None when the bulk path does not apply.

    It applies to new objects of exactly ``model`` that are in no session,
    have no relationship set, and all give the same columns.
    """
    mapper: Any = inspect(model)
    columns = [attr.key for attr in mapper.column_attrs]
    relationships = set(mapper.relationships.keys())
    keys: tuple[str, ...] | None = None
    for obj in objs:
        if type(obj) is not model:
            return None
        state: Any = instance_state(obj)
        if state.key is not None or state.session_id is not None:
            return None
        present = obj.__dict__
        if relationships & present.keys():
            return None
        mine = tuple(k for k in columns if k in present)
        if keys is None:
            keys = mine
        elif mine != keys:
            return None
    return keys


@functools.cache
def _insert_returning(table: Any) -> Any:
    """One ``INSERT … RETURNING *`` construct per table: SQLAlchemy memoizes the cache
    key of a statement object, so reusing it skips that work on every execution."""
    return insert(table).returning(*table.c, sort_by_parameter_order=True)


async def bulk_insert(
    session: AsyncSession, model: type[Any], objs: Sequence[Any], keys: tuple[str, ...]
) -> None:
    """INSERT ``objs`` in batches with RETURNING; make them persistent in ``session``."""
    mapper: Any = inspect(model)
    table = mapper.local_table
    by_key = {attr.key: attr.columns[0] for attr in mapper.column_attrs}
    version = mapper.version_id_col
    extra: dict[str, Any] = {}
    if version is not None and mapper.get_property_by_column(version).key not in keys:
        extra[version.key] = 1  # what the ORM's version counter starts at
    params = [{by_key[k].key: obj.__dict__[k] for k in keys} | extra for obj in objs]
    rows = (await session.execute(_insert_returning(table), params)).all()
    attr_keys = [mapper.get_property_by_column(c).key for c in table.c]
    sync = session.sync_session
    pk_index = list(table.c).index(mapper.primary_key[0])
    for obj, row in zip(objs, rows, strict=True):
        obj.__dict__.update(zip(attr_keys, row, strict=True))
        track_json(obj)
        mark_loaded(obj)  # loaded values, no pending changes
        add_persistent(sync, obj, mapper.identity_key_from_primary_key((row[pk_index],)))
