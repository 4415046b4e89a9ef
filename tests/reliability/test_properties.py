"""Property-based tests (hypothesis): position arithmetic and the cache codec.

* ``weighted_entry_price`` equals the exact rational average rounded half-even
  to 8 places, for any amounts a Numeric(18, 8) column can hold.
* Any sequence of buys and sells through ``record_trade`` leaves the position
  a Fraction-based model predicts (oversells refused, nothing written).
* The cache codec gives back exactly what it was given (same digits and
  exponent, same instant and offset, same JSON), or refuses to cache; no
  mutation of a stored entry decodes into anything but a clean miss.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alpha_data.cache.codec import Corrupt, Shape, Uncacheable
from alpha_data.cache.orm import InSession, SecretNotLoadedError, materialize
from alpha_data.errors import InvalidDataError
from alpha_data.models import Alert, Portfolio, Position, Role, Severity, Trade, User
from alpha_data.services import create_portfolio, record_trade, weighted_entry_price
from tests.reliability.tools import TALLY

ONE = Decimal("0.00000001")
MAX = Decimal("9999999999.99999999")


def exact_half_even(value: Fraction) -> Decimal:
    """``value`` (> 0) rounded to 8 decimal places, ties to even, by integer arithmetic."""
    scaled = value * 10**8
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest > scaled.denominator or (2 * rest == scaled.denominator and whole % 2):
        whole += 1
    return Decimal(whole).scaleb(-8)


amounts = st.decimals(min_value=ONE, max_value=MAX, places=8)


@settings(max_examples=400, deadline=None)
@given(held_q=amounts, held_p=amounts, q=amounts, p=amounts)
def test_weighted_entry_price_is_the_exact_average_rounded_half_even(held_q, held_p, q, p):
    TALLY.case("hypothesis: weighted_entry_price")
    got = weighted_entry_price(held_q, held_p, q, p)
    exact = (Fraction(held_q) * Fraction(held_p) + Fraction(q) * Fraction(p)) / (
        Fraction(held_q) + Fraction(q)
    )
    assert got == exact_half_even(exact)
    assert got.as_tuple().exponent == -8  # the column's scale, always
    assert min(held_p, p) <= got <= max(held_p, p)
    assert got == weighted_entry_price(q, p, held_q, held_p)  # the order of the two lots


# -- the same arithmetic through the service, against a model ------------------------------

lots = st.decimals(min_value=ONE, max_value=Decimal(1000), places=4)
prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100000), places=2)
operations = st.lists(st.tuples(st.sampled_from(["buy", "sell"]), lots, prices), max_size=8)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_any_trade_sequence_leaves_the_position_the_model_predicts(db, ops):
    TALLY.case("hypothesis: trade sequence")
    pid = (await create_portfolio(db, name="model")).id
    quantity, price = Fraction(0), None
    accepted = 0
    for side, q, p in ops:
        TALLY.case("hypothesis: record_trade")
        if side == "sell" and q > quantity:
            with pytest.raises(InvalidDataError):
                await record_trade(db, portfolio_id=pid, symbol="X", side=side, quantity=q, price=p)
            continue
        await record_trade(db, portfolio_id=pid, symbol="X", side=side, quantity=q, price=p)
        accepted += 1
        if side == "buy":
            price = (
                Fraction(p)
                if price is None
                else Fraction(
                    exact_half_even(
                        (quantity * price + Fraction(q) * Fraction(p)) / (quantity + Fraction(q))
                    )
                )
            )
            quantity += Fraction(q)
        else:
            quantity -= Fraction(q)
            if quantity == 0:
                price = None
    async with db.unit_of_work(read_only=True) as uow:
        position = await uow.portfolios.get_position(pid, "X")
        trades = (
            await uow.session.execute(
                select(func.count()).select_from(Trade).where(Trade.portfolio_id == pid)
            )
        ).scalar_one()
    assert trades == accepted  # refused sells wrote nothing
    if quantity == 0:
        assert position is None  # sold down to zero: deleted
    else:
        assert position is not None
        assert Fraction(position.quantity) == quantity
        assert position.entry_price == exact_half_even(price)  # type: ignore[arg-type]
    TALLY.rows_verified("trades", trades)
    TALLY.rows_verified("positions", 1)


# -- cache codec round trip --------------------------------------------------------------------

offsets = st.sampled_from(
    [
        timezone.utc,
        timezone(timedelta(hours=5, minutes=45)),
        timezone(timedelta(hours=-11)),
        timezone(timedelta(hours=14)),
        timezone(timedelta(hours=-3, minutes=-30, seconds=-17)),
    ]
)
aware = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)
texts = st.text(max_size=40)
any_decimal = st.decimals(allow_nan=True, allow_infinity=True)
ids = st.integers(min_value=1, max_value=2**63 - 1)
versions = st.integers(min_value=1, max_value=2**31 - 1)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits orjson refuses: the result must then be Uncacheable
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def portfolios(draw: Any) -> Portfolio:
    portfolio = Portfolio(
        id=draw(ids),
        name=draw(texts),
        description=draw(st.none() | texts),
        version=draw(versions),
        created_at=draw(aware),
        updated_at=draw(aware),
    )
    position_ids = draw(st.lists(ids, max_size=5, unique=True))
    portfolio.positions = [
        Position(
            id=i,
            portfolio_id=portfolio.id,
            symbol=draw(texts),
            quantity=draw(any_decimal),
            entry_price=draw(any_decimal),
            current_price=draw(st.none() | any_decimal),
            version=draw(versions),
            created_at=draw(aware),
            updated_at=draw(aware),
        )
        for i in position_ids
    ]
    return portfolio


def same(a: Any, b: Any) -> bool:
    """Equal and indistinguishable: the same type, digits, exponent, instant and offset."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, float):
        return orjson.dumps(a) == orjson.dumps(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def columns(obj: Any, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        prop.key: getattr(obj, prop.key)
        for prop in type(obj).__mapper__.column_attrs
        if prop.key not in skip
    }


def round_trip(shape: Shape, result: Any) -> Any:
    body = shape.encode(result)
    entry = b'["t1,t2",' + body  # what the store puts in front: the tag tokens
    return materialize(shape, shape.parse(entry), Session())


@settings(max_examples=150, deadline=None)
@given(portfolio=portfolios())
def test_a_portfolio_with_positions_round_trips_exactly(portfolio):
    TALLY.case("hypothesis: codec round trip")
    shape = Shape(Portfolio, load=("positions",))
    got = round_trip(shape, portfolio)
    assert got is not portfolio
    for key, value in columns(portfolio).items():
        assert same(getattr(got, key), value), key
    assert len(got.positions) == len(portfolio.positions)
    for mine, theirs in zip(got.positions, portfolio.positions, strict=True):
        for key, value in columns(theirs).items():
            assert same(getattr(mine, key), value), key


@st.composite
def alerts(draw: Any) -> list[Alert]:
    return [
        Alert(
            id=i,
            title=draw(texts),
            message=draw(texts),
            severity=draw(st.sampled_from(list(Severity))),
            source=draw(texts),
            # JSON null in a NOT NULL column reads back as SQL NULL: not a value the layer writes
            tags=draw(json_values.filter(lambda v: v is not None)),
            acknowledged=draw(st.booleans()),
            acknowledged_by=draw(st.none() | texts),
            acknowledged_at=draw(st.none() | aware),
            version=draw(versions),
            created_at=draw(aware),
            updated_at=draw(aware),
        )
        for i in draw(st.lists(ids, max_size=4, unique=True))
    ]


def has_huge_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, list):
        return any(has_huge_int(v) for v in value)
    if isinstance(value, dict):
        return any(has_huge_int(v) for v in value.values())
    return False


@settings(max_examples=150, deadline=None)
@given(items=alerts())
def test_a_list_of_alerts_with_any_json_tags_round_trips_or_is_not_cached(items):
    TALLY.case("hypothesis: codec round trip")
    shape = Shape(Alert, many=True)
    try:
        got = round_trip(shape, items)
    except Uncacheable:
        # Only JSON that cannot be written exactly (integers beyond 64 bits) is refused.
        assert any(has_huge_int(a.tags) for a in items)
        return
    assert len(got) == len(items)
    for mine, theirs in zip(got, items, strict=True):
        for key, value in columns(theirs).items():
            assert same(getattr(mine, key), value), key


@settings(max_examples=60, deadline=None)
@given(
    id_=ids,
    username=texts,
    email=texts,
    password_hash=st.text(min_size=20, max_size=60),
    role=st.sampled_from(list(Role)),
    when=aware,
)
def test_a_user_round_trips_without_its_password_hash(
    id_, username, email, password_hash, role, when
):
    TALLY.case("hypothesis: codec round trip")
    user = User(
        id=id_,
        username=username,
        email=email,
        password_hash=password_hash,
        role=role,
        is_active=True,
        last_login=None,
        created_at=when,
        updated_at=when,
    )
    assume(password_hash not in username + email)
    shape = Shape(User)
    assert password_hash.encode() not in shape.encode(user)
    got = round_trip(shape, user)
    for key, value in columns(user, skip=frozenset({"password_hash"})).items():
        assert same(getattr(got, key), value), key
    with pytest.raises(SecretNotLoadedError):
        _ = got.password_hash


def _entry() -> bytes:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    portfolio = Portfolio(
        id=1, name="P", description=None, version=1, created_at=when, updated_at=when
    )
    portfolio.positions = [
        Position(
            id=2,
            portfolio_id=1,
            symbol="S",
            quantity=Decimal("1.5"),
            entry_price=Decimal(2),
            current_price=None,
            version=1,
            created_at=when,
            updated_at=when,
        )
    ]
    return b'["t1",' + Shape(Portfolio, load=("positions",)).encode(portfolio)


ENTRY = _entry()


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_mutated_entry_is_a_clean_miss_or_a_well_formed_portfolio(data):
    TALLY.case("hypothesis: corrupted cache entry")
    raw = bytearray(ENTRY)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        kind = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        chunk = data.draw(
            st.binary(min_size=1, max_size=6)
            | st.sampled_from([b'"', b",", b"[", b"]", b"null", b"1e999", b'"x"', b"-1", b"{}"])
        )
        if kind == "replace":
            raw[at : at + len(chunk)] = chunk
        elif kind == "insert":
            raw[at:at] = chunk
        elif kind == "delete":
            del raw[at : at + len(chunk)]
        else:
            del raw[at:]
    shape = Shape(Portfolio, load=("positions",))
    try:
        got = materialize(shape, shape.parse(bytes(raw)), Session())
    except (Corrupt, InSession):
        return
    # Still decodable: then it is a Portfolio whose columns have their declared types.
    assert isinstance(got, Portfolio) and all(isinstance(p, Position) for p in got.positions)
    assert isinstance(got.id, int) and isinstance(got.name, str)
    assert isinstance(got.created_at, datetime) and got.created_at.utcoffset() is not None
    for position in got.positions:
        assert isinstance(position.quantity, Decimal) and isinstance(position.symbol, str)
