"""Declarative base, naming convention and the columns every table shares."""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import BigInteger, DateTime, Identity, MetaData, Numeric, String, Table, func
from sqlalchemy import Enum as SAEnum
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, PassiveFlag, mapped_column
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.schema import FetchedValue
from sqlalchemy.util import greenlet_spawn

from alpha_data.models.triggers import listen_for_create
from alpha_data.schema_names import NAMING_CONVENTION

__all__ = ["Base", "Money", "StrEnum", "TimestampedIdMixin", "enum_column", "metadata"]

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: Money and quantities: exact decimals, 18 digits with 8 after the point.
Money = Numeric(18, 8, asdecimal=True)


class StrEnum(str, enum.Enum):
    """A str-valued enum (``enum.StrEnum`` is 3.11+); ``str()`` gives the value."""

    def __str__(self) -> str:
        return str(self.value)


def enum_column(enum_cls: type[StrEnum], name: str) -> SAEnum:
    """Store ``enum_cls`` by value as a short VARCHAR guarded by a named CHECK."""
    return SAEnum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(AsyncAttrs, DeclarativeBase):
    """Base of every mapped class: one MetaData, Decimal money, tz-aware times.

    ``AsyncAttrs``: inside a unit of work, ``await obj.awaitable_attrs.name``
    loads a relationship (or deferred column) that is not loaded yet; plain
    attribute access raises instead (relationships are ``raise_on_sql``, so
    no statement is ever sent behind the caller's back).
    """

    metadata = metadata
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        Decimal: Money,
        datetime: DateTime(timezone=True),
        str: String(),
    }

    #: Attributes never written to the cache and never shown in ``repr``.
    __secret_attributes__: ClassVar[frozenset[str]] = frozenset()

    def __repr__(self) -> str:
        from sqlalchemy import inspect

        state = inspect(self)
        shown = []
        for attr in state.mapper.column_attrs:
            key = attr.key
            if key in self.__secret_attributes__ or key in state.unloaded:
                continue
            shown.append(f"{key}={state.dict.get(key)!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def awaitable_attrs(self) -> AsyncAttrs._AsyncAttrGetitem:
        """Every attribute as an awaitable that may load it (see ``AsyncAttrs``)."""
        return _AwaitableAttrs(self)


class _AwaitableAttrs(AsyncAttrs._AsyncAttrGetitem):
    """``AsyncAttrs``' accessor, which also loads ``raise_on_sql`` relationships.

    SQLAlchemy's own accessor reads the attribute in a greenlet, which the
    ``raise_on_sql`` loader refuses; asking explicitly is what
    ``awaitable_attrs`` means, so the relationship is loaded with the loader's
    no-raise flag (one SELECT, like ``lazy="select"``).
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Awaitable[Any]:
        return greenlet_spawn(_load_attribute, self._instance, name)


def _load_attribute(obj: Any, name: str) -> Any:
    state: Any = instance_state(obj)
    if name in state.mapper.relationships and name not in state.dict:
        state.manager[name].impl.get(
            state, state.dict, passive=PassiveFlag.PASSIVE_OFF | PassiveFlag.NO_RAISE
        )
    return getattr(obj, name)


class TimestampedIdMixin:
    """``id`` (BigInteger identity) plus ``created_at``/``updated_at`` set by PostgreSQL.

    ``updated_at`` is maintained by a ``BEFORE UPDATE`` trigger (see
    :mod:`alpha_data.models.triggers`), so Core statements bump it too. A class
    using the mixin (list it before ``Base``) gets ``eager_defaults=True`` merged
    into its ``__mapper_args__`` (a flush reads ``updated_at`` back with
    RETURNING, so reading it after an update needs no lazy load, which async
    code cannot do) and its table gets the trigger on ``metadata.create_all``.
    Migrations add it with ``alpha_data.migrations_support.create_updated_at_trigger``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        declared = cls.__dict__.get("__mapper_args__")
        if declared is None or isinstance(declared, dict):
            merged = {"eager_defaults": True, **(declared or {})}
            type.__setattr__(cls, "__mapper_args__", merged)
        super().__init_subclass__(**kwargs)
        table = cls.__dict__.get("__table__")
        if isinstance(table, Table):
            listen_for_create(table)

    id: Mapped[int] = mapped_column(
        BigInteger, Identity(always=False), primary_key=True, sort_order=-10
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False, sort_order=100
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        server_default=func.now(),
        server_onupdate=FetchedValue(),
        nullable=False,
        sort_order=100,
    )
