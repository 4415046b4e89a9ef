"""Hostile input: every string, number, time and JSON shape a caller can pass.

The rule for each case: InvalidDataError (AuthenticationError or
PermissionDeniedError where a credential is being checked) and not a single
row written; or, where the value is legal, the call succeeds and reading the
row back from PostgreSQL (and through the cache, for cached reads) gives
exactly what was given. Any other exception is a failure. The schema's
catalog is compared before and after every test in this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from alpha_data import Database
from alpha_data.errors import (
    AuthenticationError,
    DataLayerError,
    InvalidDataError,
    PermissionDeniedError,
)
from alpha_data.models import Alert, ApiKey, Portfolio, Trade, User
from alpha_data.repositories.pagination import encode_cursor
from alpha_data.services import (
    acknowledge_alert,
    authenticate,
    authenticate_api_key,
    create_portfolio,
    create_user,
    get_cached_portfolio,
    insert_portfolio_metrics,
    issue_api_key,
    raise_alert,
    record_trade,
)
from examples.api import create_app
from tests.reliability.tools import (
    Tally,
    catalog_as_seen_by,
    catalog_snapshot,
    new_password,
    rows_seen_by,
    unique,
)

UTC = timezone.utc

#: Strings no field should choke on. The first three can never be stored.
HOSTILE: dict[str, str] = {
    "nul": "a\x00b",
    "1mb": "x" * 1_000_000,
    "lone-surrogate": "ab\ud800cd",
    "sql": "x'); DROP TABLE users; --",
    "sql-or": "' OR '1'='1",
    "quotes": "\"'`\\",
    "emoji": "📈🚀 ok 👩‍💻",
    "rtl-override": "\u202eexe.txt",
    "format": "%s %(x)s {0} $1 ${x}",
    "newlines": "a\r\nb\tc",
    "json": '{"$gt": ""}',
    "wide": "é" * 300,
}
NEVER_STORABLE = frozenset({"nul", "1mb", "lone-surrogate"})
REFUSED = (InvalidDataError,)
CREDENTIAL_REFUSED = (InvalidDataError, AuthenticationError, PermissionDeniedError)


@pytest.fixture(scope="module")
async def catalog_before(database_url: str) -> tuple[str, list[str]]:
    return await catalog_snapshot(database_url)


@pytest.fixture(autouse=True)
async def schema_unchanged(
    db: Database, catalog_before: tuple[str, list[str]], tally: Tally
) -> Any:
    """The catalog (columns, indexes, constraints, relations, triggers...) is unchanged.

    Read inside the test's own transaction, so DDL that a hostile value smuggled
    in would show even though the ``db`` fixture rolls everything back.
    """
    yield
    after, after_lines = await catalog_as_seen_by(db)
    before, lines = catalog_before
    assert after == before, sorted(set(lines) ^ set(after_lines))[:20]
    tally.check("catalog snapshot")


@dataclass
class Ctx:
    """Rows the cases of one test build on."""

    user_id: int
    username: str
    password: str
    portfolio_id: int
    raw_key: str
    spare_alerts: list[int]


async def make_ctx(db: Database) -> Ctx:
    password = new_password()
    username = unique("owner")
    user = await create_user(
        db, username=username, email=f"{username}@example.com", password=password, role="trader"
    )
    portfolio = await create_portfolio(db, name="ctx")
    _, raw = await issue_api_key(db, user_id=user.id, name="ctx", permissions=["read"])
    return Ctx(user.id, username, password, portfolio.id, raw, [])


async def fresh(db: Database, model: Any, id_: int) -> Any:
    """The row as PostgreSQL has it now (never the cache, never the identity map)."""
    async with db.unit_of_work(read_only=True) as uow:
        return await uow.session.get(model, id_, populate_existing=True)


def name_() -> str:
    return unique("u").replace("-", "")


# -- every string field a service accepts -----------------------------------------------------


async def _user(db: Database, ctx: Ctx, **kw: Any) -> User:
    username = kw.pop("username", None) or name_()
    kw.setdefault("email", f"{username}@example.com")
    kw.setdefault("password", "a perfectly fine password")
    return await create_user(db, username=username, **kw)


async def _read_user(db: Database, user: User, attr: str) -> Any:
    stored = getattr(await fresh(db, User, user.id), attr)
    async with db.unit_of_work(read_only=True) as uow:  # through the cache, twice
        for _ in range(2):
            cached = await uow.users.get(user.id)
            assert cached is not None and getattr(cached, attr) == stored
    return stored


async def _password_works(db: Database, user: User, value: str) -> int:
    return (await authenticate(db, username=user.username, password=value)).id


async def _portfolio_attr(db: Database, portfolio: Portfolio, attr: str) -> Any:
    stored = getattr(await fresh(db, Portfolio, portfolio.id), attr)
    for _ in range(2):  # through the cache (store, then hit)
        cached = await get_cached_portfolio(db, portfolio.id)
        await db.cache.drain()
        assert cached is not None and getattr(cached, attr) == stored
    return stored


async def _trade(db: Database, ctx: Ctx, **kw: Any) -> Trade:
    args: dict[str, Any] = {
        "portfolio_id": ctx.portfolio_id,
        "symbol": unique("S").replace("-", ""),
        "side": "buy",
        "quantity": Decimal(1),
        "price": Decimal(1),
        **kw,
    }
    trade = await record_trade(db, **args)
    if kw.get("external_id") is not None:  # a repeat with a hostile id is still idempotent
        assert (await record_trade(db, **args)).id == trade.id
    return trade


async def _alert(db: Database, ctx: Ctx, **kw: Any) -> Alert:
    args: dict[str, Any] = {"title": "t", "message": "m", "severity": "info", "source": "s", **kw}
    return await raise_alert(db, **args)


async def _ack(db: Database, ctx: Ctx, by: str) -> Alert:
    return await acknowledge_alert(db, ctx.spare_alerts.pop(), by=by)  # each value its own alert


async def _lookup(db: Database, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    async with db.unit_of_work(read_only=True) as uow:
        return await fn(uow)


@dataclass(frozen=True)
class Field:
    """One argument of one service: how to call with a value, and how to read it back."""

    call: Callable[[Database, Ctx, Any], Awaitable[Any]]
    read: Callable[[Database, Any], Awaitable[Any]] | None  # None: nothing to read back
    expect: Callable[[Any, Any], Any] = lambda value, made: value
    refused: tuple[type[Exception], ...] = REFUSED
    writes: bool = True


def _attr(model: Any, attr: str) -> Callable[[Database, Any], Awaitable[Any]]:
    async def read(db: Database, made: Any) -> Any:
        return getattr(await fresh(db, model, made.id), attr)

    return read


FIELDS: dict[str, Field] = {
    "create_user.username": Field(
        lambda db, ctx, v: _user(db, ctx, username=v, email=f"{name_()}@example.com"),
        lambda db, u: _read_user(db, u, "username"),
    ),
    "create_user.email": Field(
        lambda db, ctx, v: _user(db, ctx, email=v),
        lambda db, u: _read_user(db, u, "email"),
        expect=lambda v, made: v.strip(),
    ),
    "create_user.password": Field(
        lambda db, ctx, v: _user(db, ctx, password=v),
        None,  # the round trip: the same password authenticates (checked below)
    ),
    "create_user.role": Field(lambda db, ctx, v: _user(db, ctx, role=v), _attr(User, "role")),
    "issue_api_key.name": Field(
        lambda db, ctx, v: issue_api_key(db, user_id=ctx.user_id, name=v, permissions=["read"]),
        lambda db, made: _attr(ApiKey, "name")(db, made[0]),
    ),
    "issue_api_key.permissions": Field(
        lambda db, ctx, v: issue_api_key(db, user_id=ctx.user_id, name="k", permissions=[v]),
        lambda db, made: _attr(ApiKey, "permissions")(db, made[0]),
        expect=lambda v, made: [v],
    ),
    "create_portfolio.name": Field(
        lambda db, ctx, v: create_portfolio(db, name=v),
        lambda db, p: _portfolio_attr(db, p, "name"),
    ),
    "create_portfolio.description": Field(
        lambda db, ctx, v: create_portfolio(db, name="p", description=v),
        lambda db, p: _portfolio_attr(db, p, "description"),
    ),
    "record_trade.symbol": Field(
        lambda db, ctx, v: _trade(db, ctx, symbol=v), _attr(Trade, "symbol")
    ),
    "record_trade.side": Field(lambda db, ctx, v: _trade(db, ctx, side=v), _attr(Trade, "side")),
    "record_trade.order_type": Field(
        lambda db, ctx, v: _trade(db, ctx, order_type=v), _attr(Trade, "order_type")
    ),
    "record_trade.external_id": Field(
        lambda db, ctx, v: _trade(db, ctx, external_id=v), _attr(Trade, "external_id")
    ),
    "raise_alert.title": Field(lambda db, ctx, v: _alert(db, ctx, title=v), _attr(Alert, "title")),
    "raise_alert.message": Field(
        lambda db, ctx, v: _alert(db, ctx, message=v), _attr(Alert, "message")
    ),
    "raise_alert.severity": Field(
        lambda db, ctx, v: _alert(db, ctx, severity=v), _attr(Alert, "severity")
    ),
    "raise_alert.source": Field(
        lambda db, ctx, v: _alert(db, ctx, source=v), _attr(Alert, "source")
    ),
    "raise_alert.tags": Field(
        lambda db, ctx, v: _alert(db, ctx, tags=[v]),
        _attr(Alert, "tags"),
        expect=lambda v, made: [v],
    ),
    "acknowledge_alert.by": Field(
        lambda db, ctx, v: _ack(db, ctx, v), _attr(Alert, "acknowledged_by")
    ),
    "authenticate.username": Field(
        lambda db, ctx, v: authenticate(db, username=v, password=ctx.password),
        None,
        refused=CREDENTIAL_REFUSED,
        writes=False,
    ),
    "authenticate.password": Field(
        lambda db, ctx, v: authenticate(db, username=ctx.username, password=v),
        None,
        refused=CREDENTIAL_REFUSED,
        writes=False,
    ),
    "authenticate_api_key.raw_key": Field(
        lambda db, ctx, v: authenticate_api_key(db, v),
        None,
        refused=CREDENTIAL_REFUSED,
        writes=False,
    ),
    "authenticate_api_key.permission": Field(
        lambda db, ctx, v: authenticate_api_key(db, ctx.raw_key, permission=v),
        None,
        refused=CREDENTIAL_REFUSED,
        writes=False,
    ),
    "metrics.insert.name": Field(
        lambda db, ctx, v: _metric(db, name=v), lambda db, p: _latest(db, p, "metric_name")
    ),
    "metrics.insert.label-value": Field(
        lambda db, ctx, v: _metric(db, labels={"k": v}),
        lambda db, p: _latest(db, p, "labels"),
        expect=lambda v, made: {"k": v},
    ),
    "metrics.insert.label-key": Field(
        lambda db, ctx, v: _metric(db, labels={v: "x"}),
        lambda db, p: _latest(db, p, "labels"),
        expect=lambda v, made: {v: "x"},
    ),
    # Read paths with a caller's string: refused, or an ordinary (empty) answer.
    "users.get_by_username": Field(
        lambda db, ctx, v: _lookup(db, lambda uow: uow.users.get_by_username(v)), None, writes=False
    ),
    "users.get_by_email": Field(
        lambda db, ctx, v: _lookup(db, lambda uow: uow.users.get_by_email(v)), None, writes=False
    ),
    "users.list(filter)": Field(
        lambda db, ctx, v: _lookup(db, lambda uow: uow.users.list(username=v)), None, writes=False
    ),
    "alerts.list_open(source)": Field(
        lambda db, ctx, v: _lookup(db, lambda uow: uow.alerts.list_open(source=v)),
        None,
        writes=False,
    ),
    "alerts.list_open(tag)": Field(
        lambda db, ctx, v: _lookup(db, lambda uow: uow.alerts.list_open(tag=v)), None, writes=False
    ),
    "portfolios.get_trade_by_external_id": Field(
        lambda db, ctx, v: _lookup(db, lambda uow: uow.portfolios.get_trade_by_external_id(v)),
        None,
        writes=False,
    ),
    "api_keys.get_by_prefix": Field(
        lambda db, ctx, v: _lookup(db, lambda uow: uow.api_keys.get_by_prefix(v)),
        None,
        writes=False,
    ),
}


async def _metric(db: Database, *, name: str = "m", labels: dict[str, str] | None = None) -> Any:
    async with db.unit_of_work() as uow:
        point = await uow.metrics.insert(name, 1.0, labels=labels)
        await uow.commit()
    return point


async def _latest(db: Database, point: Any, attr: str) -> Any:
    async with db.unit_of_work(read_only=True) as uow:
        got = await uow.metrics.latest(point.metric_name, labels=point.labels or None)
    assert got is not None
    return getattr(got, attr)


#: (field, hostile value) cells that currently fail, each pinned by a strict xfail test below
#: (remove the cell here when its test starts to pass). None at the moment.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("field", sorted(FIELDS))
async def test_hostile_strings_are_refused_or_stored_exactly(db, tally: Tally, field: str) -> None:
    spec = FIELDS[field]
    ctx = await make_ctx(db)
    if field == "acknowledge_alert.by":
        ctx.spare_alerts.extend([(await _alert(db, ctx)).id for _ in HOSTILE])
    problems: list[str] = []
    for label, value in HOSTILE.items():
        if (field, label) in KNOWN_BUGS:
            continue
        tally.case("hostile string")
        before = await rows_seen_by(db)
        try:
            made = await spec.call(db, ctx, value)
        except spec.refused as exc:
            after = await rows_seen_by(db)
            if after != before:
                problems.append(f"{label}: refused but rows changed {before} -> {after}")
            if len(str(exc)) > 1000:
                problems.append(f"{label}: error message of {len(str(exc))} characters")
            tally.check("table counts unchanged", len(before))
            continue
        except Exception as exc:  # anything else is a bug
            problems.append(f"{label}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        if not spec.writes:
            if await rows_seen_by(db) != before:
                problems.append(f"{label}: a read changed rows")
            continue
        if label in NEVER_STORABLE:
            problems.append(f"{label}: accepted a value PostgreSQL cannot hold")
            continue
        if spec.read is not None:
            stored = await spec.read(db, made)
            if stored != spec.expect(value, made):
                problems.append(f"{label}: stored {stored!r:.80} instead of the input")
            tally.rows_verified("round trips", 1)
        elif field == "create_user.password":
            if await _password_works(db, made, value) != made.id:
                problems.append(f"{label}: the password does not authenticate its user")
            tally.rows_verified("round trips", 1)
    assert not problems, f"{field}:\n" + "\n".join(problems)


# -- numbers ----------------------------------------------------------------------------------

MONEY: dict[str, Any] = {
    "nan": Decimal("NaN"),
    "snan": Decimal("sNaN"),
    "inf": Decimal("Infinity"),
    "-inf": Decimal("-Infinity"),
    "negative": Decimal("-1"),
    "zero": Decimal("0"),
    "-zero": Decimal("-0"),
    "over-precision": Decimal("1.000000001"),
    "too-large": Decimal("10000000000"),
    "huge-exponent": Decimal("1E+999999"),
    "tiny-exponent": Decimal("1E-999999"),
    "huge-int": 10**30,
    "float": 1.5,
    "float-nan": float("nan"),
    "bool": True,
    "none": None,
    "str-garbage": "12,5",
    "str-sql": "1; DROP TABLE trades",
    # legal values: stored exactly
    "max": Decimal("9999999999.99999999"),
    "min-step": Decimal("0.00000001"),
    "exponent-form": Decimal("1E+2"),
    "trailing-zeros": Decimal("1.10000000"),
    "str-number": "12.5",
    "int": 7,
}
LEGAL_MONEY = frozenset({"max", "min-step", "exponent-form", "trailing-zeros", "str-number", "int"})


def legal_amount(label: str, field: str) -> bool:
    """Quantities and prices are > 0; fees may be 0."""
    return label in LEGAL_MONEY or (field == "fees" and label in ("zero", "-zero"))


@pytest.mark.parametrize("field", ["quantity", "price", "fees"])
async def test_hostile_decimals_are_refused_or_stored_exactly(db, tally: Tally, field: str):
    ctx = await make_ctx(db)
    problems = []
    for label, value in MONEY.items():
        tally.case("hostile decimal")
        before = await rows_seen_by(db)
        try:
            trade = await _trade(db, ctx, **{field: value})
        except InvalidDataError:
            if await rows_seen_by(db) != before:
                problems.append(f"{label}: refused but rows changed")
            if legal_amount(label, field):
                problems.append(f"{label}: a legal amount was refused")
            continue
        except Exception as exc:
            problems.append(f"{label}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        if not legal_amount(label, field):
            problems.append(f"{label}: accepted")
            continue
        stored = getattr(await fresh(db, Trade, trade.id), field)
        if not (isinstance(stored, Decimal) and stored == Decimal(value)):
            problems.append(f"{label}: stored {stored!r} for {value!r}")
        tally.rows_verified("round trips", 1)
    assert not problems, "\n".join(problems)


METRIC_VALUES: dict[str, Any] = {
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "decimal-nan": Decimal("NaN"),
    "decimal-inf": Decimal("Infinity"),
    "decimal-overflow": Decimal("1e400"),
    "bool": True,
    "str": "1",
    "none": None,
    # legal
    "negative": -5.5,
    "large": 1e308,
    "decimal": Decimal("0.1"),
    "int": 2**63,
}
LEGAL_METRIC_VALUES = frozenset({"negative", "large", "decimal", "int"})


async def test_hostile_metric_values_are_refused_or_stored_exactly(db, tally: Tally):
    pid = (await create_portfolio(db, name="metrics")).id
    problems = []
    for label, value in METRIC_VALUES.items():
        tally.case("hostile metric value")
        before = await rows_seen_by(db)
        try:
            point = await insert_portfolio_metrics(db, pid, value)
        except InvalidDataError:
            if await rows_seen_by(db) != before:
                problems.append(f"{label}: refused but rows changed")
            if label in LEGAL_METRIC_VALUES:
                problems.append(f"{label}: a legal value was refused")
            continue
        except Exception as exc:
            problems.append(f"{label}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        if label not in LEGAL_METRIC_VALUES:
            problems.append(f"{label}: accepted")
        elif point.value != float(value):
            problems.append(f"{label}: stored {point.value!r}")
        tally.rows_verified("round trips", 1)
    assert not problems, "\n".join(problems)


# -- times ------------------------------------------------------------------------------------

FAR = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
TIMES: dict[str, Any] = {
    "naive-now": datetime.now(),
    "naive-far-future": datetime(9999, 1, 1),
    "date": date(2030, 1, 1),
    "iso-string": "2030-01-01T00:00:00+00:00",
    "epoch-int": 1_900_000_000,
    "before-year-1-utc": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
    "after-year-9999-utc": datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-23))),
    # legal where the field allows the instant
    "far-future": FAR,
    "odd-offset": datetime(
        2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=5, minutes=45))
    ),
    "year-1": datetime(1, 1, 2, tzinfo=UTC),
    "past": datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC),
}
AWARE_TIMES = frozenset({"far-future", "odd-offset", "year-1", "past"})


async def test_hostile_times_are_refused_or_stored_as_the_same_instant(db, tally: Tally):
    ctx = await make_ctx(db)
    problems = []
    for label, value in TIMES.items():
        tally.case("hostile datetime", 2)
        future = label in ("far-future", "odd-offset")
        # An API key's expiry: only future instants are legal; the key must then work.
        try:
            key, raw = await issue_api_key(
                db, user_id=ctx.user_id, name="exp", permissions=["read"], expires_at=value
            )
        except InvalidDataError:
            if future:
                problems.append(f"expires_at {label}: a legal expiry was refused")
        except Exception as exc:
            problems.append(f"expires_at {label}: {type(exc).__name__}: {str(exc)[:120]}")
        else:
            if not future:
                problems.append(f"expires_at {label}: accepted")
            stored = (await fresh(db, ApiKey, key.id)).expires_at
            if stored != value or stored.utcoffset() is None:
                problems.append(f"expires_at {label}: stored {stored!r}")
            try:
                assert (await authenticate_api_key(db, raw)).id == key.id
            except Exception as exc:
                problems.append(f"expires_at {label}: the key fails: {type(exc).__name__}: {exc}")
            tally.rows_verified("round trips", 1)
        # A metric's time: any aware instant PostgreSQL can hold is legal.
        try:
            point = await insert_portfolio_metrics(db, ctx.portfolio_id, 1.0, value)
        except InvalidDataError:
            if label in AWARE_TIMES:
                problems.append(f"metric time {label}: a legal time was refused")
        except Exception as exc:
            problems.append(f"metric time {label}: {type(exc).__name__}: {str(exc)[:120]}")
        else:
            if label not in AWARE_TIMES:
                problems.append(f"metric time {label}: accepted")
            if point.time != value or point.time.utcoffset() is None:
                problems.append(f"metric time {label}: stored {point.time!r}")
            tally.rows_verified("round trips", 1)
    # Reads refuse naive bounds instead of guessing a zone.
    async with db.unit_of_work(read_only=True) as uow:
        for bad in (TIMES["naive-now"], TIMES["date"], TIMES["iso-string"]):
            with pytest.raises(InvalidDataError):
                await uow.portfolios.list_trades(ctx.portfolio_id, since=bad)
            with pytest.raises(InvalidDataError):
                await uow.metrics.range("m", bad, FAR)
            tally.case("hostile datetime", 2)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("where", ["api key expiry", "metric time"])
async def test_the_largest_datetime_is_refused_or_round_trips_aware(db, tally: Tally, where: str):
    """datetime.max with a zone is what asyncpg sends as PostgreSQL 'infinity'."""
    ctx = await make_ctx(db)
    largest = datetime.max.replace(tzinfo=UTC)
    tally.case("hostile datetime")
    try:
        if where == "api key expiry":
            key, raw = await issue_api_key(
                db, user_id=ctx.user_id, name="max", permissions=["read"], expires_at=largest
            )
            assert (await authenticate_api_key(db, raw)).id == key.id
            stored = (await fresh(db, ApiKey, key.id)).expires_at
        else:
            stored = (await insert_portfolio_metrics(db, ctx.portfolio_id, 1.0, largest)).time
    except InvalidDataError:
        return
    assert stored == largest and stored.utcoffset() is not None


# -- JSON shapes ------------------------------------------------------------------------------


class _Tags:
    """An iterable that is not a list (a generator would do as well)."""

    def __iter__(self) -> Iterator[str]:
        return iter(["gen"])


TAGS: dict[str, Any] = {
    "string": "risk",
    "bytes": b"risk",
    "ints": [1, 2],
    "nested": [["risk"]],
    "none-item": [None],
    "dict-item": [{"k": "v"}],
    "long-tag": ["x" * 65],
    "too-many": [f"t{i}" for i in range(21)],
    "nul": ["a\x00"],
    "empty-tag": [""],
    "control": ["a\nb"],
    "surrogate": ["\udfff"],
    "none": None,
    "int": 5,
    # legal: stored as the list of distinct tags, in order
    "duplicates": ["a", "b", "a"],
    "iterable": _Tags(),
    "unicode": ["市場", "📉"],
}
LEGAL_TAGS = {"duplicates": ["a", "b"], "iterable": ["gen"], "unicode": ["市場", "📉"]}

LABELS: dict[str, Any] = {
    "int-value": {"a": 1},
    "nested": {"a": {"b": "c"}},
    "list": ["a"],
    "string": "a=b",
    "int-key": {1: "a"},
    "empty-key": {"": "x"},
    "surrogate": {"k": "\ud800"},
    "nul-key": {"a\x00": "b"},
    "too-many": {f"k{i}": "v" for i in range(33)},
    "long-value": {"k": "v" * 501},
    "long-key": {"k" * 101: "v"},
    # legal
    "unicode": {"市場": "📉"},
    "sql": {"k": "'; DROP TABLE alphapulse.metrics; --"},
    "empty": {},
}
LEGAL_LABELS = frozenset({"unicode", "sql", "empty"})

PERMISSIONS: dict[str, Any] = {
    "string": "read",
    "ints": [1],
    "nested": [["read"]],
    "upper": ["READ"],
    "space": ["a b"],
    "empty": [""],
    "too-many": [f"p{i}" for i in range(33)],
    "too-long": ["p" * 65],
    "sql": ["read'; --"],
    "none": None,
    # legal
    "scoped": ["trades:*", "read"],
    "star": ["*"],
}
LEGAL_PERMISSIONS = {"scoped": ["trades:*", "read"], "star": ["*"]}


async def test_json_fields_of_the_wrong_shape_are_refused(db, tally: Tally):
    ctx = await make_ctx(db)
    problems = []

    async def attempt(kind: str, label: str, call: Awaitable[Any], legal: bool) -> Any:
        tally.case(f"hostile {kind}")
        before = await rows_seen_by(db)
        try:
            made = await call
        except InvalidDataError:
            if await rows_seen_by(db) != before:
                problems.append(f"{kind} {label}: refused but rows changed")
            if legal:
                problems.append(f"{kind} {label}: a legal value was refused")
            return None
        except Exception as exc:
            problems.append(f"{kind} {label}: {type(exc).__name__}: {str(exc)[:120]}")
            return None
        if not legal:
            problems.append(f"{kind} {label}: accepted")
        return made

    for label, tags in TAGS.items():
        alert = await attempt("tags", label, _alert(db, ctx, tags=tags), label in LEGAL_TAGS)
        if alert is not None and label in LEGAL_TAGS:
            stored = (await fresh(db, Alert, alert.id)).tags
            if stored != LEGAL_TAGS[label]:
                problems.append(f"tags {label}: stored {stored!r}")
            tally.rows_verified("round trips", 1)
    for label, labels in LABELS.items():
        point = await attempt(
            "labels", label, _metric(db, name=f"m-{label}", labels=labels), label in LEGAL_LABELS
        )
        if point is not None and label in LEGAL_LABELS:
            stored = await _latest(db, point, "labels")
            if stored != labels:
                problems.append(f"labels {label}: stored {stored!r}")
            tally.rows_verified("round trips", 1)
    for label, perms in PERMISSIONS.items():
        made = await attempt(
            "permissions",
            label,
            issue_api_key(db, user_id=ctx.user_id, name="p", permissions=perms),
            label in LEGAL_PERMISSIONS,
        )
        if made is not None and label in LEGAL_PERMISSIONS:
            stored = (await fresh(db, ApiKey, made[0].id)).permissions
            if stored != LEGAL_PERMISSIONS[label]:
                problems.append(f"permissions {label}: stored {stored!r}")
            tally.rows_verified("round trips", 1)
    # Label filters on reads have the same rules.
    async with db.unit_of_work(read_only=True) as uow:
        for label in sorted(set(LABELS) - LEGAL_LABELS):
            tally.case("hostile labels")
            try:
                await uow.metrics.range("m", FAR - timedelta(days=1), FAR, labels=LABELS[label])
                problems.append(f"label filter {label}: accepted")
            except InvalidDataError:
                pass
            except Exception as exc:
                problems.append(f"label filter {label}: {type(exc).__name__}")
    assert not problems, "\n".join(problems)


# -- filter and order names, pagination cursors -----------------------------------------------

NAMES = [
    "password_hash",  # a secret column is no oracle: never filterable or orderable
    "key_hash",
    "id; DROP TABLE users",
    "id desc",
    "1=1",
    "",
    "__class__",
    "_sa_instance_state",
    "metadata",
    "api_keys",
    "positions",
    "lower(email)",
    "\x00",
    "\ud800",
    "name" * 10_000,
]


@pytest.mark.parametrize("repo", ["users", "api_keys", "portfolios", "alerts"])
async def test_filter_and_order_names_from_a_request_are_refused(db, tally: Tally, repo: str):
    await make_ctx(db)
    async with db.unit_of_work(read_only=True) as uow:
        repository = getattr(uow, repo)
        for name in NAMES:
            for call in (
                lambda n=name: repository.list(**{n: "x"}),
                lambda n=name: repository.count(**{n: 1}),
                lambda n=name: repository.list(order_by=n),
                lambda n=name: repository.list(order_by="-" + n),
            ):
                tally.case("hostile filter/order name")
                with pytest.raises(InvalidDataError):
                    await call()
        for value in ({"$gt": ""}, ["a", {"b": 1}], object(), b"bytes", 1.5):
            tally.case("hostile filter value")
            with pytest.raises(InvalidDataError):
                await repository.list(id=value)


def _forge(order_by: str, value: Any, row_id: Any) -> str:
    """A cursor with a valid digest (the digest has no secret key: anyone can make one)."""
    payload = json.dumps([1, order_by, value, row_id]).encode()
    digest = hashlib.blake2b(payload, digest_size=8, person=b"alpha_cursor").digest()
    return base64.urlsafe_b64encode(digest + payload).rstrip(b"=").decode()


def _bad_cursors(real: str) -> dict[str, Any]:
    tampered = real[:-2] + ("A" if real[-2] != "A" else "B") + real[-1]
    return {
        "garbage": "garbage",
        "empty": "",
        "not-base64": "!!!***",
        "tampered": tampered,
        "other-order": encode_cursor("name", ("x", 1)),
        "too-long": "A" * 10_000,
        "nul": "ab\x00cd",
        "surrogate": "\ud800",
        "json-without-digest": base64.urlsafe_b64encode(b'[1,"id",null,1]').decode(),
        "int": 5,
        "bytes": real.encode(),
        "forged-huge-id": _forge("id", None, 2**70),
        "forged-bool-id": _forge("id", None, True),
        "forged-version": json.dumps([2, "id", None, 1]),
    }


async def test_pagination_cursors_from_a_request_are_refused(db, tally: Tally):
    for n in range(3):
        await create_portfolio(db, name=f"p{n}")
    async with db.unit_of_work(read_only=True) as uow:
        page = await uow.portfolios.list(limit=1)
        assert page.next_cursor is not None
        for cursor in _bad_cursors(page.next_cursor).values():
            tally.case("hostile cursor")
            with pytest.raises(InvalidDataError):
                await uow.portfolios.list(limit=1, after=cursor)


FORGED: dict[str, tuple[str, Any, int]] = {
    # a valid digest around a value of the wrong type for the ordering column
    "text-for-time": ("created_at", "yesterday", 1),
    "decimal-for-time": ("created_at", {"d": "1"}, 1),
    "int-for-time": ("created_at", 5, 1),
    "time-for-text": ("name", {"t": "2024-01-01T00:00:00+00:00"}, 1),
    "int-for-text": ("-name", 12, 1),
    "out-of-range-id": ("created_at", {"t": "2024-01-01T00:00:00+00:00"}, 2**63),
}


@pytest.mark.parametrize(
    "label",
    [pytest.param(label) for label in sorted(FORGED)],
)
async def test_forged_cursors_with_wrong_types_are_invalid_data(db, tally: Tally, label: str):
    await create_portfolio(db, name="p")
    order_by, value, row_id = FORGED[label]
    tally.case("hostile cursor")
    async with db.unit_of_work(read_only=True) as uow:
        with pytest.raises(InvalidDataError):
            await uow.portfolios.list(order_by=order_by, after=_forge(order_by, value, row_id))


async def test_forged_trade_cursor_over_http_is_422_not_500(db, tally: Tally):
    pid = (await create_portfolio(db, name="p")).id
    app = create_app(database=db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for value in ("yesterday", 3, {"d": "1"}):
                tally.case("hostile cursor")
                r = await client.get(
                    f"/portfolios/{pid}/trades", params={"after": _forge("-executed_at", value, 1)}
                )
                assert r.status_code == 422, (value, r.status_code, r.text)


async def test_refusals_are_typed_errors_with_bounded_messages(db):
    """A sanity check of the matrix's own premise: DataLayerError is what callers catch."""
    with pytest.raises(DataLayerError) as info:
        await create_portfolio(db, name=HOSTILE["1mb"])
    assert isinstance(info.value, InvalidDataError)
    assert len(str(info.value)) < 200 and "xxxxxxxxxx" not in str(info.value)
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.session.execute(select(Portfolio.id))).first() is None


# -- known bugs, one test each (strict: they fail loudly once fixed) --------------------------


async def test_lone_surrogate_password_is_refused_on_login(db, tally: Tally):
    ctx = await make_ctx(db)
    tally.case("hostile string")
    with pytest.raises((AuthenticationError, InvalidDataError)):
        await authenticate(db, username=ctx.username, password="correct horse \ud800 battery")


async def test_refusal_messages_do_not_echo_unbounded_input(db, tally: Tally):
    ctx = await make_ctx(db)
    tally.case("hostile string")
    with pytest.raises(CREDENTIAL_REFUSED) as info:
        await authenticate_api_key(db, ctx.raw_key, permission=HOSTILE["1mb"])
    assert len(str(info.value)) < 1000


async def test_an_int_too_large_for_a_double_is_invalid_data(db, tally: Tally):
    pid = (await create_portfolio(db, name="overflow")).id
    before = await rows_seen_by(db)
    tally.case("hostile metric value")
    with pytest.raises(InvalidDataError):
        await insert_portfolio_metrics(db, pid, 10**400)
    assert await rows_seen_by(db) == before


@pytest.mark.parametrize("field", ["tags", "permissions"])
async def test_a_mapping_is_not_taken_for_a_list(db, tally: Tally, field: str):
    ctx = await make_ctx(db)
    tally.case(f"hostile {field}")
    before = await rows_seen_by(db)
    try:
        if field == "tags":
            await _alert(db, ctx, tags={"risk": "high"})
        else:
            await issue_api_key(db, user_id=ctx.user_id, name="m", permissions={"read": True})
    except InvalidDataError:
        assert await rows_seen_by(db) == before
        return
    raise AssertionError(f"a mapping was accepted as {field}")
