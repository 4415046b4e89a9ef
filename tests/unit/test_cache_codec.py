"""The cache codec and key parts: exact round trips, strict decoding, no secrets (no I/O)."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Date, DateTime, Float, Integer, Numeric, String, Uuid
from sqlalchemy import Enum as SAEnum
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from alpha_data.cache.codec import ColumnCodec, Corrupt, Shape, Uncacheable
from alpha_data.cache.keys import MAX_PART, Unkeyable, part
from alpha_data.cache.orm import SecretNotLoadedError, materialize
from alpha_data.models import Alert, Portfolio, Position, Role, Severity, User
from alpha_data.testing.factories import FAKE_HASH

UTC = timezone.utc


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class _Base(DeclarativeBase):
    pass


class Thing(_Base):
    """A model with every column kind the codec knows (never created in a database)."""

    __tablename__ = "codec_things"
    __secret_attributes__ = frozenset({"token"})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    token: Mapped[str] = mapped_column(String(50))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 8), nullable=True)
    ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    local: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), nullable=True)
    day: Mapped[date | None] = mapped_column(Date, nullable=True)
    ref: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    color: Mapped[Color | None] = mapped_column(SAEnum(Color), nullable=True)
    data: Mapped[Any] = mapped_column(JSON, nullable=True)


def roundtrip(codec: ColumnCodec, obj: Any) -> dict[str, Any]:
    values = orjson.loads(orjson.dumps(codec.encode(obj)))
    out: dict[str, Any] = {}
    codec.fill(out, values)
    return out


# -- key parts -----------------------------------------------------------------


def test_key_parts_are_typed_and_readable() -> None:
    assert part(42) == "42"
    assert part(None) == "~"
    assert part("ana") == "ana"
    assert part("a:b c%") == "a%3Ab%20c%25"
    assert part("~") == "%7E"
    assert part("42") == "'42"  # a string never reads as an int
    assert part("") == ""
    assert part(Decimal("1.50")) == part(Decimal("1.5")) == "d1.5"
    assert part(Severity.WARNING) == part("warning") == "warning"
    assert part("ünï") == "%C3%BCn%C3%AF"


@pytest.mark.parametrize(
    "value", [1.5, True, b"x", object(), [1], {"a": 1}, Decimal("NaN"), "\ud800", 10**200]
)
def test_key_parts_reject_other_types(value: Any) -> None:
    with pytest.raises(Unkeyable):
        part(value)


def test_long_parts_become_digests() -> None:
    long = "x" * (MAX_PART + 1)
    assert part(long).startswith("#") and len(part(long)) < 40
    assert part(long) != part(long + "y")


@given(st.text(), st.text())
def test_string_parts_are_injective_and_safe(a: str, b: str) -> None:  # (no surrogates)
    pa, pb = part(a), part(b)
    assert ":" not in pa and not any(c.isspace() for c in pa)
    assert pa.isprintable()
    if a != b:
        assert pa != pb


@given(st.integers(min_value=-(2**63), max_value=2**63), st.text(max_size=30))
def test_ints_and_strings_never_collide(n: int, s: str) -> None:
    assert part(n) != part(s)


# -- column codec ----------------------------------------------------------------

offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200)
@given(
    amount=st.none() | st.decimals(allow_nan=False, allow_infinity=False),
    ratio=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    at=st.none() | st.datetimes(timezones=offsets),
    local=st.none() | st.datetimes(),
    day=st.none() | st.dates(),
    ref=st.none() | st.uuids(),
    color=st.none() | st.sampled_from(Color),
    data=json_values,
    name=st.text(max_size=50),
)
def test_every_column_kind_round_trips_exactly(**values: Any) -> None:
    codec = ColumnCodec(Thing)
    thing = Thing(id=7, token="s3cret", **values)
    out = roundtrip(codec, thing)
    assert "token" not in out
    for key, value in values.items():
        got = out[key]
        assert got == value and type(got) is type(value), key
        if isinstance(value, Decimal):
            assert got.as_tuple() == value.as_tuple()  # same digits and exponent
        if isinstance(value, datetime) and value.tzinfo is not None:
            assert got.utcoffset() == value.utcoffset()


def test_model_values_round_trip_exactly() -> None:
    at = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    user = User(
        id=1,
        username="ana",
        email="a@x.io",
        password_hash=FAKE_HASH,
        role=Role.ADMIN,
        is_active=True,
        last_login=None,
        created_at=at,
        updated_at=at,
    )
    out = roundtrip(ColumnCodec(User), user)
    assert out["role"] is Role.ADMIN and out["created_at"] == at and out["last_login"] is None
    assert "password_hash" not in out
    position = Position(
        id=3,
        portfolio_id=1,
        symbol="BRK.B",
        quantity=Decimal("0.00000001"),
        entry_price=Decimal("9999999999.99999999"),
        current_price=Decimal("1E+2"),
        version=4,
        created_at=at,
        updated_at=at,
    )
    out = roundtrip(ColumnCodec(Position), position)
    assert out["entry_price"] == Decimal("9999999999.99999999")
    assert str(out["quantity"]) == "1E-8" and str(out["current_price"]) == "1E+2"


def test_values_that_would_not_round_trip_are_refused() -> None:
    codec = ColumnCodec(Thing)
    for bad in (
        {"ratio": float("nan")},
        {"at": datetime(2024, 1, 1)},  # naive in a timestamptz column
        {"local": datetime(2024, 1, 1, tzinfo=UTC)},
        {"amount": 1.5},
        {"data": {"n": 2**70}},
    ):
        thing = Thing(id=1, name="x", token="t", **bad)
        with pytest.raises(Uncacheable):
            Shape(Thing).encode(thing) if "data" in bad else codec.encode(thing)


def test_unloaded_columns_are_refused() -> None:
    with pytest.raises(Uncacheable):
        ColumnCodec(Thing).encode(Thing(id=1, token="t"))  # name never set


def test_unsupported_column_type_fails_loudly() -> None:
    from sqlalchemy import LargeBinary

    class Blob(_Base):
        __tablename__ = "codec_blobs"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        raw: Mapped[bytes] = mapped_column(LargeBinary)

    with pytest.raises(TypeError, match="no exact codec"):
        ColumnCodec(Blob)


# -- entries ---------------------------------------------------------------------

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _user(**kw: Any) -> User:
    values: dict[str, Any] = {
        "id": 5,
        "username": "ana",
        "email": "ana@x.io",
        "password_hash": FAKE_HASH,
        "role": Role.TRADER,
        "is_active": True,
        "last_login": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(kw)
    return User(**values)


def entry(body: bytes) -> bytes:
    return b'["t1",' + body


def test_entry_never_contains_secrets() -> None:
    raw = entry(Shape(User).encode(_user()))
    assert FAKE_HASH.encode() not in raw and b"password" not in raw
    assert orjson.loads(raw)[0] == "t1"  # a whole entry is plain JSON


async def test_materialized_objects_equal_the_originals_and_are_attached() -> None:
    shape = Shape(Portfolio, load=("positions",))
    portfolio = Portfolio(
        id=9, name="P", description=None, version=3, created_at=NOW, updated_at=NOW
    )
    portfolio.positions = [
        Position(
            id=i,
            portfolio_id=9,
            symbol=f"S{i}",
            quantity=Decimal("1.5"),
            entry_price=Decimal("2"),
            current_price=None,
            version=1,
            created_at=NOW,
            updated_at=NOW,
        )
        for i in (1, 2)
    ]
    session = AsyncSession()
    got = materialize(shape, shape.parse(entry(shape.encode(portfolio))), session)
    assert type(got) is Portfolio and got is not portfolio
    assert [p.symbol for p in got.positions] == ["S1", "S2"]
    assert got in session and all(p in session for p in got.positions)
    assert got.positions[0].portfolio is got  # many-to-one from the identity map, no SQL
    for attr in ("id", "name", "description", "version", "created_at", "updated_at"):
        assert getattr(got, attr) == getattr(portfolio, attr)
    await session.close()


async def test_secret_columns_are_hidden_not_none() -> None:
    shape = Shape(User)
    session = AsyncSession()
    user = materialize(shape, shape.parse(entry(shape.encode(_user()))), session)
    with pytest.raises(SecretNotLoadedError, match="password_hash"):
        _ = user.password_hash
    assert "password_hash" not in repr(user)
    user.password_hash = "new"  # writing works (and is flushed like any change)
    assert user.password_hash == "new"
    await session.close()


async def test_list_shape_and_session_copy_wins() -> None:
    shape = Shape(Alert, many=True)
    alerts = [
        Alert(
            id=i,
            title=f"a{i}",
            message="m",
            severity=Severity.ERROR,
            source="risk",
            tags=["x", {"k": [1, 2.5]}],
            acknowledged=False,
            acknowledged_by=None,
            acknowledged_at=None,
            version=1,
            created_at=NOW,
            updated_at=NOW,
        )
        for i in (1, 2)
    ]
    payload = shape.parse(entry(shape.encode(alerts)))
    session = AsyncSession()
    first = materialize(shape, payload, session)
    again = materialize(shape, shape.parse(entry(shape.encode(alerts))), session)
    assert [a.id for a in first] == [1, 2] and again[0] is first[0]
    assert first[0].tags == ["x", {"k": [1, 2.5]}] and first[0].tags is not first[1].tags
    await session.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x80\x81 not json",
        b"[]",
        b'{"a": 1}',
        b'["t1",2,"x",null]',  # another format
        b'["t1",1,"000000000000",null]',  # another model layout
    ],
)
def test_foreign_bytes_are_corrupt(raw: bytes) -> None:
    with pytest.raises(Corrupt):
        Shape(User).parse(raw)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda cols: cols[:-1],  # a column missing
        lambda cols: [*cols, 1],  # one too many
        lambda cols: ["5", *cols[1:]],  # id as text
        lambda cols: [*cols[:3], "pilot", *cols[4:]],  # not a Role
        lambda cols: [*cols[:5], "2026-01-02T03:04:05", *cols[6:]],  # naive timestamptz
        lambda cols: [*cols[:1], None, *cols[2:]],  # null username
        lambda cols: [*cols[:4], 1, *cols[5:]],  # int for a bool
    ],
)
async def test_corrupt_values_are_rejected(mutate: Any) -> None:
    shape = Shape(User)
    doc = orjson.loads(entry(shape.encode(_user())))
    doc[3] = [mutate(doc[3][0])]
    session = AsyncSession()
    with pytest.raises(Corrupt):
        materialize(shape, shape.parse(orjson.dumps(doc)), session)
    assert len(session.sync_session.identity_map) == 0  # nothing half-attached
    await session.close()


def test_fingerprint_depends_on_layout_and_shape() -> None:
    prints = {
        Shape(User).fingerprint,
        Shape(User, many=True).fingerprint,
        Shape(Portfolio).fingerprint,
        Shape(Portfolio, load=("positions",)).fingerprint,
    }
    assert len(prints) == 4
    assert Shape(User).fingerprint == Shape(User).fingerprint
