"""The cache codec: ORM column values ↔ JSON (orjson), exact and without pickle.

Each mapped class gets a ``ColumnCodec`` built from its mapper: one converter
per column, chosen by the column's SQL type, so decoding needs no type tags
and cannot be confused by JSON that happens to look like one.

=========================  ============================  ======================
column type                stored as                     read back as
=========================  ============================  ======================
Integer, String, Boolean   itself                        itself (type checked)
Numeric (Decimal)          ``str(value)``                ``Decimal`` (same digits
                                                         and exponent)
Float                      itself (finite only)          ``float``
DateTime(timezone=True)    ISO 8601 with offset          aware ``datetime``, same
                                                         instant and offset
DateTime / Date            ISO 8601                      naive ``datetime``/``date``
Enum                       the member's value            the member
Uuid                       canonical text                ``uuid.UUID``
JSON / JSONB               itself                        itself
=========================  ============================  ======================

Secret columns (``__secret_attributes__``) are never encoded. An entry is
``[tokens, FORMAT, fingerprint, payload]``; the fingerprint hashes the column
layout, so entries written by another version of a model read as misses.
"""

from __future__ import annotations

import enum
import hashlib
import math
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import orjson
from sqlalchemy import inspect, types
from sqlalchemy.orm import Mapper

from alpha_data.cache.tags import table_name

__all__ = ["FORMAT", "ColumnCodec", "Corrupt", "Shape", "Uncacheable", "column_codec"]

#: Version of the entry layout; bump it to orphan every stored entry.
FORMAT = 1

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]


class _Kind(NamedTuple):
    """How one column type is encoded and decoded.

    ``exact`` is set for values stored as themselves (checked with
    ``type(v) is exact``, no call); ``decode`` converts the others.
    """

    encode: Encoder
    decode: Decoder | None
    name: str
    exact: type[Any] | None = None


def _same(kind: type[Any], name: str) -> _Kind:
    return _Kind(_check(kind), None, name, kind)


class Uncacheable(ValueError):
    """A result that cannot be encoded exactly (it is returned, not stored)."""


class Corrupt(ValueError):
    """Bytes that are not an entry of this shape (read as a miss)."""


def _check(kind: type[Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return check


def _encode_float(value: Any) -> float:
    if not isinstance(value, float) or not math.isfinite(value):
        raise Uncacheable("only finite floats round-trip through JSON")
    return value


def _decode_float(value: Any) -> float:
    if type(value) is int:
        return float(value)
    return float(_check(float)(value))


def _encode_decimal(value: Any) -> str:
    if not isinstance(value, Decimal):
        raise Uncacheable(f"expected Decimal, got {type(value).__name__}")
    return str(value)


def _decode_decimal(value: Any) -> Decimal:
    if type(value) is not str:
        raise TypeError("Decimal is stored as a string")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise TypeError("not a decimal") from None


def _encode_aware(value: Any) -> str:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise Uncacheable("timestamptz values must be aware datetimes")
    return value.isoformat()


def _decode_aware(value: Any) -> datetime:
    if type(value) is not str:
        raise TypeError("datetime is stored as a string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise TypeError("naive datetime where an aware one was stored")
    return parsed


def _encode_naive(value: Any) -> str:
    if not isinstance(value, datetime) or value.tzinfo is not None:
        raise Uncacheable("timestamp without time zone values must be naive datetimes")
    return value.isoformat()


def _decode_naive(value: Any) -> datetime:
    parsed = datetime.fromisoformat(_check(str)(value))
    if parsed.tzinfo is not None:
        raise TypeError("aware datetime where a naive one was stored")
    return parsed


def _encode_date(value: Any) -> str:
    if type(value) is not date:
        raise Uncacheable("expected a date")
    return value.isoformat()


def _decode_date(value: Any) -> date:
    return date.fromisoformat(_check(str)(value))


def _encode_uuid(value: Any) -> str:
    if not isinstance(value, uuid.UUID):
        raise Uncacheable("expected a UUID")
    return str(value)


def _decode_uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(_check(str)(value))


def _encode_json(value: Any) -> Any:
    return value  # orjson validates it when the entry is dumped


def _decode_json(value: Any) -> Any:
    return value


def _enum_codec(enum_class: type[enum.Enum]) -> _Kind:
    members = dict(enum_class._value2member_map_)

    def encode(value: Any) -> Any:
        if isinstance(value, enum_class):
            return value.value
        if value in members:  # a raw value assigned to the attribute
            return members[value].value
        raise Uncacheable(f"{value!r} is not a {enum_class.__name__}")

    def decode(value: Any) -> Any:
        try:
            return members[value]
        except (KeyError, TypeError):
            raise TypeError(f"not a {enum_class.__name__} value") from None

    names = ",".join(f"{k}" for k in sorted(map(str, members)))
    return _Kind(encode, decode, f"enum[{enum_class.__qualname__}:{names}]")


def _enum_kind(sql_type: Any) -> _Kind:
    if sql_type.enum_class is not None:
        return _enum_codec(sql_type.enum_class)
    return _same(str, "str")


def _numeric_kind(sql_type: Any) -> _Kind:
    if not sql_type.asdecimal:
        return _Kind(_encode_float, _decode_float, "float")
    return _Kind(_encode_decimal, _decode_decimal, "decimal")


def _datetime_kind(sql_type: Any) -> _Kind:
    if sql_type.timezone:
        return _Kind(_encode_aware, _decode_aware, "datetime+tz")
    return _Kind(_encode_naive, _decode_naive, "datetime")


def _uuid_kind(sql_type: Any) -> _Kind:
    if sql_type.as_uuid:
        return _Kind(_encode_uuid, _decode_uuid, "uuid")
    return _same(str, "str")


#: SQL type -> codec; first match wins, so Enum precedes String and Float Numeric.
_KINDS: tuple[tuple[type[Any], Callable[[Any], _Kind]], ...] = (
    (types.Enum, _enum_kind),
    (types.Boolean, lambda _: _same(bool, "bool")),
    (types.Integer, lambda _: _same(int, "int")),
    (types.Float, lambda _: _Kind(_encode_float, _decode_float, "float")),
    (types.Numeric, _numeric_kind),
    (types.DateTime, _datetime_kind),
    (types.Date, lambda _: _Kind(_encode_date, _decode_date, "date")),
    (types.Uuid, _uuid_kind),
    (types.JSON, lambda _: _Kind(_encode_json, _decode_json, "json")),
    (types.String, lambda _: _same(str, "str")),
)


def _pick(sql_type: types.TypeEngine[Any]) -> _Kind:
    """How to encode and decode a column of ``sql_type``."""
    for sql_class, kind in _KINDS:
        if isinstance(sql_type, sql_class):
            return kind(sql_type)
    raise TypeError(f"the cache has no exact codec for {sql_type!r}")


class ColumnCodec:
    """Encode/decode the non-secret column values of one mapped class, in mapper order."""

    def __init__(self, model: type[Any]) -> None:
        mapper: Mapper[Any] = inspect(model)
        secret: frozenset[str] = getattr(model, "__secret_attributes__", frozenset())
        self.model = model
        self.mapper = mapper
        self.secrets: tuple[str, ...] = tuple(p.key for p in mapper.column_attrs if p.key in secret)
        keys: list[str] = []
        encoders: list[Encoder] = []
        decoders: list[tuple[str, type[Any] | None, Decoder | None, bool]] = []
        layout: list[str] = [f"{model.__module__}.{model.__qualname__}"]
        for prop in mapper.column_attrs:
            if prop.key in secret:
                continue
            if len(prop.columns) != 1:
                raise TypeError(f"{model.__name__}.{prop.key} maps several columns")
            column: Any = prop.columns[0]
            kind = _pick(column.type)
            keys.append(prop.key)
            encoders.append(kind.encode)
            decoders.append((prop.key, kind.exact, kind.decode, bool(column.nullable)))
            layout.append(f"{prop.key}:{kind.name}:{'null' if column.nullable else 'notnull'}")
        self.keys: tuple[str, ...] = tuple(keys)
        self._encoders = tuple(zip(keys, encoders, strict=True))
        self._decoders = tuple(decoders)
        pk = mapper.primary_key
        if len(pk) != 1:
            raise TypeError(f"{model.__name__}: only single-column primary keys are cached")
        self.pk_index = keys.index(mapper.get_property_by_column(pk[0]).key)
        self.new_instance = mapper.class_manager.new_instance
        self.identity_key = mapper.identity_key_from_primary_key
        self.layout = ";".join(layout)

    def encode(self, obj: Any) -> list[Any]:
        """Column values of a loaded ``obj``; Uncacheable if one is not loaded."""
        loaded = obj.__dict__
        out: list[Any] = []
        for key, encode in self._encoders:
            try:
                value = loaded[key]
            except KeyError:
                raise Uncacheable(f"{type(obj).__name__}.{key} is not loaded") from None
            out.append(None if value is None else encode(value))
        return out

    def fill(self, target: dict[str, Any], values: Sequence[Any]) -> None:
        """Decode ``values`` into the instance dict ``target``; raises Corrupt."""
        decoders = self._decoders
        if type(values) is not list or len(values) != len(decoders):
            raise Corrupt("wrong number of columns")
        try:
            for (key, exact, decode, nullable), value in zip(decoders, values, strict=True):
                if value is None:
                    if not nullable:
                        raise Corrupt(f"null in non-null column {key}")
                    target[key] = None
                elif exact is not None:
                    if type(value) is not exact:
                        raise Corrupt(f"{key}: expected {exact.__name__}")
                    target[key] = value
                else:
                    target[key] = decode(value)  # type: ignore[misc]
        except (TypeError, ValueError) as exc:
            raise Corrupt(str(exc)) from None


_codecs: dict[type[Any], ColumnCodec] = {}


def column_codec(model: type[Any]) -> ColumnCodec:
    """The (cached) ColumnCodec of ``model``."""
    codec = _codecs.get(model)
    if codec is None:
        codec = _codecs[model] = ColumnCodec(model)
    return codec


class Shape:
    """What a cached read returns: ``model | None``, ``list[model]`` or ``Page[model]``.

    A node is ``[columns, related...]`` with one entry per name in ``load``
    (a list of column lists for collections, a column list or None for
    scalars); the payload is a node, None, a list of nodes, or for a page
    ``[[node, ...], next_cursor]``.
    """

    def __init__(
        self,
        model: type[Any],
        *,
        load: Sequence[str] = (),
        many: bool = False,
        page: bool = False,
    ) -> None:
        self.model = model
        self.many = many or page
        self.page = page
        self.codec = column_codec(model)
        mapper: Mapper[Any] = inspect(model)
        related: list[tuple[str, ColumnCodec, bool]] = []
        kind = "page" if page else "many" if many else "one"
        layout = [f"v{FORMAT}", kind, self.codec.layout]
        for name in load:
            rel = mapper.relationships[name]
            codec = column_codec(rel.mapper.class_)
            related.append((name, codec, bool(rel.uselist)))
            layout.append(f"{name}:{'list' if rel.uselist else 'one'}:{codec.layout}")
        self.related = tuple(related)
        self.tables: tuple[str, ...] = tuple(
            dict.fromkeys([table_name(model)] + [table_name(c.model) for _, c, _ in related])
        )
        self.fingerprint = hashlib.blake2b(
            "|".join(layout).encode(), digest_size=6, person=b"alpha_shape"
        ).hexdigest()
        self._head = orjson.dumps([FORMAT, self.fingerprint])[1:-1]

    def _node(self, obj: Any) -> list[Any]:
        node: list[Any] = [self.codec.encode(obj)]
        loaded = obj.__dict__
        for name, codec, uselist in self.related:
            if name not in loaded:
                raise Uncacheable(f"{type(obj).__name__}.{name} is not loaded")
            value = loaded[name]
            if uselist:
                node.append([codec.encode(item) for item in value])
            else:
                node.append(None if value is None else codec.encode(value))
        return node

    def items_of(self, result: Any) -> Any:
        """The model objects at the top of ``result`` (not None)."""
        if self.page:
            return result.items
        return result if self.many else (result,)

    def encode(self, result: Any) -> bytes:
        """The entry body (everything after the tokens); raises Uncacheable."""
        if result is None:
            payload: Any = None
        elif self.page:
            payload = [[self._node(obj) for obj in result.items], result.next_cursor]
        elif self.many:
            payload = [self._node(obj) for obj in result]
        else:
            payload = self._node(result)
        try:
            body = orjson.dumps(payload)
        except orjson.JSONEncodeError as exc:
            raise Uncacheable(str(exc)) from None
        return self._head + b"," + body + b"]"

    def parse(self, entry: bytes) -> Any:
        """The payload of a whole entry; raises Corrupt for anything else."""
        try:
            doc = orjson.loads(entry)
        except orjson.JSONDecodeError:
            raise Corrupt("not JSON") from None
        if type(doc) is not list or len(doc) != 4 or doc[1] != FORMAT:
            raise Corrupt("not a cache entry")
        if doc[2] != self.fingerprint:
            raise Corrupt("entry of another model layout")
        return doc[3]
