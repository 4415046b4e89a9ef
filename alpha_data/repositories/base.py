"""Repository[ModelT]: the typed generic base every aggregate repository builds on."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Numeric,
    Select,
    String,
    func,
    select,
    tuple_,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeDecorator, TypeEngine

from alpha_data.errors import InvalidDataError, NotFoundError, translating
from alpha_data.models.base import Base
from alpha_data.repositories.handle import SessionBound
from alpha_data.repositories.pagination import Page, decode_cursor, encode_cursor
from alpha_data.repositories.rowload import bulk_insert, bulk_insert_keys, row_loader
from alpha_data.validation import check_aware, check_money, check_text

__all__ = ["MAX_PAGE_SIZE", "Repository", "check_id"]

ModelT = TypeVar("ModelT", bound=Base)

MAX_PAGE_SIZE = 1000
_INT64_MAX = 2**63 - 1


def check_id(value: Any, what: str = "id") -> int:
    """Validate a primary/foreign key value before it reaches SQL."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidDataError(f"{what} must be an integer, got {type(value).__name__}")
    if not 0 < value <= _INT64_MAX:
        raise InvalidDataError(f"{what} must be between 1 and 2**63-1")
    return value


class Repository(SessionBound, Generic[ModelT]):
    """CRUD, filters and keyset pagination for one mapped class, on the UoW's session.

    Reach one with ``uow.repository(MyRepository)`` (the library's own are
    ``uow.users`` etc.): one instance per unit of work, built as
    ``cls(handle, cache=..., read_only=...)``; after the block every method
    that touches ``self.session`` raises UnitOfWorkStateError.

    Filters are keyword arguments naming columns of the model (equality;
    ``None`` means IS NULL); names are checked against the mapper, never
    interpolated into SQL. ``order_by`` is one of ``orderable`` (``-name``
    for descending).
    """

    model: ClassVar[type[Any]]
    #: Columns a caller may order/paginate by (non-null, with ``id`` as tie-break).
    orderable: ClassVar[frozenset[str]] = frozenset({"id", "created_at", "updated_at"})

    # -- helpers -------------------------------------------------------------

    @classmethod
    def _column(cls, name: str) -> InstrumentedAttribute[Any]:
        mapper = cls.model.__mapper__
        secret: frozenset[str] = getattr(cls.model, "__secret_attributes__", frozenset())
        if not isinstance(name, str) or name not in mapper.column_attrs or name in secret:
            shown = repr(name)[:64] if isinstance(name, str) else type(name).__name__
            raise InvalidDataError(f"unknown field {shown} for {cls.model.__name__}")
        attr: InstrumentedAttribute[Any] = getattr(cls.model, name)
        return attr

    @classmethod
    def _where(cls, filters: Mapping[str, Any]) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        for name, value in filters.items():
            column = cls._column(name)
            if value is None:
                clauses.append(column.is_(None))
            elif isinstance(value, (list, tuple, set, frozenset)):
                clauses.append(column.in_([_filter_value(name, column, v) for v in value]))
            else:
                clauses.append(column == _filter_value(name, column, value))
        return clauses

    async def _execute(self, statement: Any, params: Any = None) -> Any:
        """Execute with errors translated to alpha_data errors."""
        with translating():
            return await self.session.execute(statement, params)

    async def _flush(self) -> None:
        with translating():
            await self.session.flush()

    # -- reads ---------------------------------------------------------------

    async def get(self, id: int) -> ModelT | None:
        """The row with primary key ``id``, or None."""
        check_id(id)
        with translating():
            if self.read_only:
                loader = row_loader(self.model)
                sync = self.session.sync_session
                if loader.identity_key(id) not in sync.identity_map:
                    rows = await loader.fetch(self.session, loader.pk.key, id)
                    return loader.build(sync, rows[0]) if rows else None
            obj: ModelT | None = await self.session.get(self.model, id)
        return obj

    async def get_one(self, id: int) -> ModelT:
        """The row with primary key ``id``; NotFoundError if there is none."""
        obj = await self.get(id)
        if obj is None:
            raise NotFoundError(f"{self.model.__name__} {id} not found", table=self._table())
        return obj

    @classmethod
    def _table(cls) -> str:
        return str(cls.model.__table__.name)

    async def list(
        self,
        *,
        limit: int = 50,
        after: str | None = None,
        order_by: str = "id",
        **filters: Any,
    ) -> Page[ModelT]:
        """One page of rows matching ``filters`` in ``order_by`` order."""
        stmt = select(self.model).where(*self._where(filters))
        return await self._page(stmt, limit=limit, after=after, order_by=order_by)

    async def _page(
        self, stmt: Select[Any], *, limit: int, after: str | None, order_by: str
    ) -> Page[ModelT]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidDataError(f"limit must be an integer between 1 and {MAX_PAGE_SIZE}")
        if not isinstance(order_by, str):
            raise InvalidDataError("order_by must be a field name")
        descending = order_by.startswith("-")
        name = order_by[1:] if descending else order_by
        if name not in self.orderable:
            allowed = ", ".join(sorted(self.orderable))
            raise InvalidDataError(
                f"cannot order {self.model.__name__} by {name[:64]!r}; use {allowed}"
            )
        column = self._column(name)
        pk = self.model.id
        if after is not None:
            value, last_id = decode_cursor(after, order_by)
            last_id = check_id(last_id, "cursor")
            if name != "id":  # a forged cursor may carry any JSON value
                value = _filter_value(name, column, value)
            if name == "id":
                stmt = stmt.where(pk < last_id if descending else pk > last_id)
            else:
                key = tuple_(column, pk)
                bound = tuple_(value, last_id)
                stmt = stmt.where(key < bound if descending else key > bound)
        if name == "id":
            ordering = [pk.desc() if descending else pk.asc()]
        else:
            ordering = [column.desc(), pk.desc()] if descending else [column.asc(), pk.asc()]
        stmt = stmt.order_by(*ordering).limit(limit + 1)
        rows = list((await self._execute(stmt)).scalars().all())
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_cursor(order_by, (getattr(last, name), last.id))
        return Page(items=rows, next_cursor=next_cursor)

    async def count(self, **filters: Any) -> int:
        """How many rows match ``filters``."""
        stmt = select(func.count()).select_from(self.model).where(*self._where(filters))
        return int((await self._execute(stmt)).scalar_one())

    async def exists(self, **filters: Any) -> bool:
        """Whether any row matches ``filters``."""
        inner = select(self.model.id).where(*self._where(filters)).limit(1)
        return bool((await self._execute(select(inner.exists()))).scalar_one())

    # -- writes --------------------------------------------------------------

    def _check_type(self, obj: Any) -> None:
        if not isinstance(obj, self.model):
            raise InvalidDataError(
                f"{type(self).__name__} stores {self.model.__name__}, got {type(obj).__name__}"
            )

    async def add(self, obj: ModelT) -> ModelT:
        """Insert ``obj`` (flushed now, so ids, defaults and constraint errors arrive here)."""
        self._check_type(obj)
        self.session.add(obj)
        await self._flush()
        return obj

    async def add_many(self, objs: Iterable[ModelT]) -> builtins.list[ModelT]:
        """Insert many objects in batched multi-row INSERT … RETURNING statements."""
        items = list(objs)
        for obj in items:
            self._check_type(obj)
        if items and (keys := bulk_insert_keys(self.model, items)) is not None:
            with translating():
                await bulk_insert(self.session, self.model, items, keys)
            return items
        self.session.add_all(items)
        await self._flush()
        return items

    async def delete(self, obj_or_id: ModelT | int) -> None:
        """Delete a loaded object or the row with that id (NotFoundError if missing)."""
        obj = await self.get_one(obj_or_id) if isinstance(obj_or_id, int) else obj_or_id
        self._check_type(obj)
        await self.session.delete(obj)
        await self._flush()


def _filter_value(name: str, column: InstrumentedAttribute[Any], value: Any) -> Any:
    """Check a filter value against the column's Python type before it reaches SQL."""
    sa_type = column.type
    if isinstance(sa_type, SAEnum) and sa_type.enum_class is not None:
        try:
            return sa_type.enum_class(value)
        except ValueError:
            raise InvalidDataError(f"{name}: {repr(value)[:64]} is not an allowed value") from None
    # By the column type, not python_type: JSON.python_type is dict up to
    # SQLAlchemy 2.0 and object from 2.1 (JSONB derives from JSON).
    if isinstance(sa_type, JSON):
        raise InvalidDataError(f"cannot filter on JSON field {name!r} by equality")
    expected = _filterable_type(sa_type)
    if expected is None:
        raise InvalidDataError(f"cannot filter on {name!r} by equality")
    if expected is int:
        return check_id(value, name) if name == "id" or name.endswith("_id") else _int(name, value)
    if expected is Decimal:
        return -check_money(-value, name) if _is_negative(value) else check_money(value, name)
    if expected is datetime:
        return check_aware(value, name)
    if expected is str:
        return check_text(value, name, max_length=10_000, allow_empty=True)
    if expected is bool and not isinstance(value, bool):
        raise InvalidDataError(f"{name} must be true or false")
    return value


#: The SQLAlchemy type families a filter accepts, each with the Python type its value is
#: checked as before it reaches SQL (in this order: Float is a Numeric, but floats are not
#: money). A column of any other type refuses to be filtered on.
_FILTERABLE: tuple[tuple[type[TypeEngine[Any]], type | None], ...] = (
    (Boolean, bool),
    (Integer, int),
    (Float, None),
    (Numeric, Decimal),
    (DateTime, datetime),
    (String, str),
)


def _filterable_type(sa_type: TypeEngine[Any]) -> type | None:
    """The Python type a filter value on ``sa_type`` is checked as, or None (not filterable)."""
    if isinstance(sa_type, TypeDecorator):
        sa_type = sa_type.impl_instance
    for family, python_type in _FILTERABLE:
        if isinstance(sa_type, family):
            return python_type
    return None


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidDataError(f"{name} must be an integer")
    return value


def _is_negative(value: Any) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite() and value < 0
    return isinstance(value, int) and not isinstance(value, bool) and value < 0
