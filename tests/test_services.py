"""Services: users and API keys, portfolios, trades (position math, idempotency,
concurrency), alerts, events published after commit."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr
from sqlalchemy import func, select

from alpha_data import services
from alpha_data.errors import (
    AuthenticationError,
    ConflictError,
    InvalidDataError,
    NotFoundError,
    PermissionDeniedError,
)
from alpha_data.events import AlertRaised, PositionChanged, TradeExecuted
from alpha_data.models import ApiKey, Position, Role, Severity, Side, Trade, User
from alpha_data.security import use_password_hasher
from alpha_data.services import (
    acknowledge_alert,
    authenticate,
    authenticate_api_key,
    create_portfolio,
    create_user,
    get_cached_portfolio,
    get_portfolio_with_positions,
    issue_api_key,
    raise_alert,
    record_trade,
    weighted_entry_price,
)
from alpha_data.testing import FAST_HASHER
from tests.support import count_statements

FAST = FAST_HASHER  # the plugin's fast_hasher fixture installs it for every test
PASSWORD = "correct horse battery"


async def new_user(db, username="ana", **kw):
    kw.setdefault("email", f"{username}@example.com")
    kw.setdefault("password", PASSWORD)
    return await create_user(db, username=username, **kw)


async def count(db, model, *where):
    async with db.unit_of_work(read_only=True) as uow:
        stmt = select(func.count()).select_from(model).where(*where)
        return (await uow.session.execute(stmt)).scalar_one()


async def position(db, portfolio_id, symbol):
    async with db.unit_of_work(read_only=True) as uow:
        return await uow.portfolios.get_position(portfolio_id, symbol)


def test_everything_is_exported():
    for name in (
        "create_user",
        "authenticate",
        "issue_api_key",
        "authenticate_api_key",
        "create_portfolio",
        "record_trade",
        "get_portfolio_with_positions",
        "get_cached_portfolio",
        "raise_alert",
        "acknowledge_alert",
        "insert_portfolio_metrics",
        "insert_portfolio_metrics_batch",
    ):
        assert callable(getattr(services, name)), name
        assert name in services.__all__


# -- users ------------------------------------------------------------------------


async def test_create_user_hashes_the_password(db):
    user = await new_user(db)
    assert user.id > 0 and user.role is Role.VIEWER and user.is_active
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    FAST.verify(user.password_hash, PASSWORD)
    assert PASSWORD not in repr(user) and "password_hash" not in repr(user)
    trader = await new_user(db, "bob", role="trader")
    assert trader.role is Role.TRADER


async def test_duplicate_username_or_email_in_any_case_is_a_conflict(db):
    await new_user(db, "ana", email="Ana@Example.com")
    with pytest.raises(ConflictError, match="username 'ana' is already taken"):
        await new_user(db, "ana", email="other@example.com")
    with pytest.raises(ConflictError, match="already registered"):
        await new_user(db, "ana2", email="ANA@example.COM")
    assert await count(db, User) == 1


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"username": "a"}, "username must be 3 to 64"),
        ({"username": "x" * 65}, "username must be 3 to 64"),
        ({"username": "has space"}, "username"),
        ({"username": "-dash"}, "username"),
        ({"username": 42}, "username must be a string"),
        ({"email": "no-at-sign"}, "email must be a valid address"),
        ({"email": "two@@example.com"}, "email"),
        ({"email": "a@localhost"}, "email"),
        ({"email": "a@exa_mple.com"}, "email"),
        ({"email": ".a@example.com"}, "email"),
        ({"email": "a" * 65 + "@example.com"}, "email"),
        ({"email": "a@" + "b" * 250 + ".com"}, "email"),
        ({"email": None}, "email must be a string"),
        ({"role": "root"}, "role must be one of admin, trader, viewer"),
        ({"password": "short"}, "at least 12"),
        ({"password": "ValidUser12"}, "at least 12"),
        ({"username": "someone_long", "password": "SOMEONE_LONG"}, "same as the username"),
        ({"password": "p" * 300}, "at most 256"),
    ],
)
async def test_invalid_user_input_is_rejected_before_sql(db, kw, message):
    data = {"username": "valid.user", "email": "valid@example.com", "password": PASSWORD}
    data.update(kw)
    with (
        count_statements(db.engine) as counter,
        pytest.raises(InvalidDataError, match=message) as info,
    ):
        await create_user(db, **data)
    assert counter.count == 0
    password = data["password"]
    assert not isinstance(password, str) or password not in str(info.value)


async def test_email_is_stripped_and_case_kept(db):
    user = await new_user(db, "eve", email="  Eve.Doe+fund@Mail.Example.ORG ")
    assert user.email == "Eve.Doe+fund@Mail.Example.ORG"


async def test_authenticate_records_last_login(db):
    created = await new_user(db)
    assert created.last_login is None
    user = await authenticate(db, username="ana", password=PASSWORD)
    assert user.id == created.id
    assert user.last_login is not None and user.last_login.tzinfo is not None
    async with db.unit_of_work(read_only=True) as uow:
        stored = await uow.users.get_for_auth("ana")
    assert stored is not None and stored.last_login == user.last_login


@pytest.mark.parametrize(
    ("username", "password"),
    [("ana", "wrong password!"), ("nobody", PASSWORD), ("", PASSWORD), ("ana", "x" * 5000)],
)
async def test_authenticate_rejects(db, username, password):
    await new_user(db)
    with pytest.raises(AuthenticationError, match="invalid username or password"):
        await authenticate(db, username=username, password=password)
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.users.get_for_auth("ana")).last_login is None


async def test_authenticate_rejects_non_strings(db):
    with pytest.raises(InvalidDataError):
        await authenticate(db, username="ana", password=None)  # type: ignore[arg-type]


async def test_disabled_user_cannot_log_in(db):
    user = await new_user(db)
    async with db.unit_of_work() as uow:
        (await uow.users.get_one(user.id)).is_active = False
        await uow.commit()
    with pytest.raises(AuthenticationError, match="disabled"):
        await authenticate(db, username="ana", password=PASSWORD)


async def test_login_rehashes_when_parameters_changed(db):
    user = await new_user(db)
    old = user.password_hash
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    with use_password_hasher(stronger):
        await authenticate(db, username="ana", password=PASSWORD)
        async with db.unit_of_work(read_only=True) as uow:
            new = (await uow.users.get_for_auth("ana")).password_hash
        assert new != old and "m=16,t=2,p=1" in new
        assert not stronger.check_needs_rehash(new)
        # and the new hash keeps working; no rehash when nothing changed
        await authenticate(db, username="ana", password=PASSWORD)
        async with db.unit_of_work(read_only=True) as uow:
            assert (await uow.users.get_for_auth("ana")).password_hash == new


async def test_get_for_auth_refreshes_a_user_already_in_the_session(db):
    user = await new_user(db)
    async with db.unit_of_work() as uow:
        loaded = await uow.users.get_one(user.id)
        uow.session.expire(loaded, ["password_hash"])  # like an object from the cache
        fresh = await uow.users.get_for_auth("ana")
        assert fresh is loaded and fresh.password_hash == user.password_hash


# -- API keys ---------------------------------------------------------------------


async def test_issue_and_authenticate_api_key(db):
    user = await new_user(db)
    key, raw = await issue_api_key(
        db, user_id=user.id, name="ci", permissions=["read", "trades:write", "read"]
    )
    assert raw.startswith(key.prefix + ".")
    assert key.permissions == ["read", "trades:write"]
    assert raw.split(".")[1] not in key.key_hash
    found = await authenticate_api_key(db, raw, permission="trades:write")
    assert found.id == key.id and found.user_id == user.id
    with pytest.raises(PermissionDeniedError, match="alerts:write"):
        await authenticate_api_key(db, raw, permission="alerts:write")


async def test_wrong_unknown_revoked_expired_keys_are_rejected(db):
    user = await new_user(db)
    key, raw = await issue_api_key(
        db,
        user_id=user.id,
        name="k",
        permissions=["*"],
        expires_at=datetime.now(timezone.utc) + timedelta(days=1),
    )
    prefix, secret = raw.split(".")
    wrong = prefix + "." + ("A" if secret[0] != "A" else "B") + secret[1:]
    with pytest.raises(AuthenticationError, match="invalid API key"):
        await authenticate_api_key(db, wrong)
    with pytest.raises(AuthenticationError, match="invalid API key"):
        await authenticate_api_key(db, "ak_000000000000." + secret)
    with pytest.raises(AuthenticationError, match="invalid API key"):
        await authenticate_api_key(db, "garbage")

    async with db.unit_of_work() as uow:
        (await uow.api_keys.get_one(key.id)).expires_at = datetime.now(timezone.utc) - timedelta(
            seconds=1
        )
        await uow.commit()
    with pytest.raises(AuthenticationError, match="expired"):
        await authenticate_api_key(db, raw)

    async with db.unit_of_work() as uow:
        (await uow.api_keys.get_one(key.id)).expires_at = None
        await uow.api_keys.revoke(key.id)
        await uow.commit()
    with pytest.raises(AuthenticationError, match="revoked"):
        await authenticate_api_key(db, raw)


async def test_key_of_disabled_user_is_rejected(db):
    user = await new_user(db)
    _, raw = await issue_api_key(db, user_id=user.id, name="k", permissions=["read"])
    async with db.unit_of_work() as uow:
        (await uow.users.get_one(user.id)).is_active = False
        await uow.commit()
    with pytest.raises(AuthenticationError, match="disabled"):
        await authenticate_api_key(db, raw)
    with pytest.raises(InvalidDataError, match="disabled"):
        await issue_api_key(db, user_id=user.id, name="k2", permissions=["read"])


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"user_id": 999_999}, NotFoundError, "User 999999 not found"),
        ({"user_id": True}, InvalidDataError, "user_id must be an integer"),
        ({"user_id": "1"}, InvalidDataError, "user_id must be an integer"),
        ({"name": ""}, InvalidDataError, "name must not be empty"),
        ({"name": "n" * 101}, InvalidDataError, "at most 100"),
        ({"permissions": "read"}, InvalidDataError, "list of strings"),
        ({"permissions": ["DROP TABLE"]}, InvalidDataError, "permission"),
        ({"expires_at": datetime(2030, 1, 1)}, InvalidDataError, "timezone-aware"),
        ({"expires_at": datetime(2000, 1, 1, tzinfo=timezone.utc)}, InvalidDataError, "future"),
    ],
)
async def test_issue_api_key_rejects(db, kw, error, message):
    user = await new_user(db)
    data = {"user_id": user.id, "name": "k", "permissions": ["read"]}
    data.update(kw)
    with pytest.raises(error, match=message):
        await issue_api_key(db, **data)
    assert await count(db, ApiKey) == 0


async def test_last_used_is_throttled(db):
    user = await new_user(db)
    key, raw = await issue_api_key(db, user_id=user.id, name="k", permissions=["read"])
    assert key.last_used is None

    def updates(counter):
        return [s for s in counter.statements if s.lstrip().upper().startswith("UPDATE")]

    with count_statements(db.engine) as counter:
        first = await authenticate_api_key(db, raw)
    assert first.last_used is not None
    assert len(updates(counter)) == 1

    with count_statements(db.engine) as counter:
        for _ in range(5):
            again = await authenticate_api_key(db, raw)
    assert updates(counter) == []
    assert again.last_used == first.last_used

    stale = datetime.now(timezone.utc) - timedelta(minutes=5)
    async with db.unit_of_work() as uow:
        await uow.api_keys.touch_last_used(key.id, stale)
        await uow.commit()
    with count_statements(db.engine) as counter:
        later = await authenticate_api_key(db, raw)
    assert len(updates(counter)) == 1
    assert later.last_used > stale


async def test_pepper_is_used_and_old_hashes_are_upgraded(db):
    user = await new_user(db)
    plain_key, plain_raw = await issue_api_key(db, user_id=user.id, name="old", permissions=[])
    assert plain_key.key_hash.startswith("sha256$")
    unpeppered = db.settings
    db.settings = unpeppered.model_copy(
        update={"api_key_pepper": SecretStr("a-server-side-pepper")}
    )
    try:
        peppered_key, peppered_raw = await issue_api_key(
            db, user_id=user.id, name="new", permissions=[]
        )
        assert peppered_key.key_hash.startswith("hmac-sha256$")
        assert (await authenticate_api_key(db, peppered_raw)).id == peppered_key.id
        # the old key still works and is upgraded on use
        assert (await authenticate_api_key(db, plain_raw)).id == plain_key.id
        async with db.unit_of_work(read_only=True) as uow:
            upgraded = await uow.api_keys.get_one(plain_key.id)
        assert upgraded.key_hash.startswith("hmac-sha256$")
        assert (await authenticate_api_key(db, plain_raw)).id == plain_key.id
    finally:
        db.settings = unpeppered
    # without the pepper, peppered hashes do not verify
    with pytest.raises(AuthenticationError):
        await authenticate_api_key(db, peppered_raw)


# -- portfolios ---------------------------------------------------------------------


async def test_create_portfolio_and_reads(db):
    portfolio = await create_portfolio(db, name="Global Macro", description="long/short")
    assert portfolio.id > 0 and portfolio.version == 1
    await record_trade(
        db, portfolio_id=portfolio.id, symbol="MSFT", side="buy", quantity=2, price="410.5"
    )
    await record_trade(
        db, portfolio_id=portfolio.id, symbol="AAPL", side="buy", quantity=1, price="190"
    )
    for read in (get_portfolio_with_positions, get_cached_portfolio):
        loaded = await read(db, portfolio.id)
        assert loaded is not None and loaded.name == "Global Macro"
        assert [(p.symbol, p.quantity) for p in loaded.positions] == [
            ("AAPL", Decimal("1")),
            ("MSFT", Decimal("2")),
        ]
        assert await read(db, 999_999) is None
        with pytest.raises(InvalidDataError):
            await read(db, 0)


@pytest.mark.parametrize(
    "kw",
    [{"name": ""}, {"name": "n" * 201}, {"name": 5}, {"description": "x\x00"}, {"name": "\x00"}],
)
async def test_create_portfolio_rejects(db, kw):
    data = {"name": "ok"}
    data.update(kw)
    with count_statements(db.engine) as counter, pytest.raises(InvalidDataError):
        await create_portfolio(db, **data)
    assert counter.count == 0


# -- trades -------------------------------------------------------------------------


def test_weighted_entry_price_rounds_half_even_to_8_dp():
    assert weighted_entry_price(Decimal(1), Decimal(10), Decimal(1), Decimal(20)) == Decimal(15)
    assert weighted_entry_price(
        Decimal(1), Decimal(10), Decimal(2), Decimal("10.00000001")
    ) == Decimal("10.00000001")  # 10.0000000066… rounds up
    # exact ties go to the even last digit
    tie_down = weighted_entry_price(Decimal(1), Decimal("1E-8"), Decimal(1), Decimal("2E-8"))
    assert tie_down == Decimal("0.00000002")  # 0.000000015 -> ...2
    tie_even = weighted_entry_price(Decimal(1), Decimal("5E-8"), Decimal(1), Decimal("2E-8"))
    assert tie_even == Decimal("0.00000004")  # 0.000000035 -> ...4
    # 36 significant digits in the products do not lose precision
    big = weighted_entry_price(
        Decimal("9999999999.99999999"),
        Decimal("9999999999.99999999"),
        Decimal("0.00000001"),
        Decimal("0.00000001"),
    )
    assert big == Decimal("9999999999.99999998")


async def test_buys_and_sells_move_the_position(db):
    pid = (await create_portfolio(db, name="P")).id
    t1 = await record_trade(
        db, portfolio_id=pid, symbol="AAPL", side="buy", quantity=Decimal("10"), price=Decimal(100)
    )
    assert t1.id > 0 and t1.side is Side.BUY and t1.executed_at.tzinfo is not None
    await record_trade(
        db, portfolio_id=pid, symbol="AAPL", side=Side.BUY, quantity=Decimal(5), price=Decimal(130)
    )
    pos = await position(db, pid, "AAPL")
    assert pos.quantity == Decimal(15) and pos.entry_price == Decimal(110)

    await record_trade(
        db, portfolio_id=pid, symbol="AAPL", side="sell", quantity=Decimal("4.5"), price=Decimal(1)
    )
    pos = await position(db, pid, "AAPL")
    assert pos.quantity == Decimal("10.5") and pos.entry_price == Decimal(110)

    await record_trade(
        db, portfolio_id=pid, symbol="AAPL", side="sell", quantity=Decimal("10.5"), price=1
    )
    assert await position(db, pid, "AAPL") is None
    assert await count(db, Trade, Trade.portfolio_id == pid) == 4
    assert await count(db, Position) == 0


async def test_overselling_writes_nothing(db):
    pid = (await create_portfolio(db, name="P")).id
    await record_trade(db, portfolio_id=pid, symbol="TSLA", side="buy", quantity=3, price=200)
    oversell = re.escape("cannot sell 3.00000001 TSLA: the portfolio holds 3")
    with pytest.raises(InvalidDataError, match=oversell):
        await record_trade(
            db, portfolio_id=pid, symbol="TSLA", side="sell", quantity="3.00000001", price=200
        )
    with pytest.raises(InvalidDataError, match="holds 0"):
        await record_trade(db, portfolio_id=pid, symbol="NVDA", side="sell", quantity=1, price=5)
    assert (await position(db, pid, "TSLA")).quantity == 3
    assert await count(db, Trade) == 1


async def test_trade_on_unknown_portfolio_is_not_found(db):
    with pytest.raises(NotFoundError, match="Portfolio 424242 not found"):
        await record_trade(db, portfolio_id=424242, symbol="X", side="buy", quantity=1, price=1)
    assert await count(db, Trade) == 0


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"quantity": 1.5}, "quantity must be a Decimal"),
        ({"quantity": Decimal(0)}, "quantity must be greater than 0"),
        ({"quantity": Decimal("-1")}, "quantity must be greater than 0"),
        ({"quantity": Decimal("0.000000001")}, "more than 8 decimal places"),
        ({"quantity": Decimal("1e11")}, "exceeds"),
        ({"quantity": Decimal("NaN")}, "finite"),
        ({"quantity": "abc"}, "not a number"),
        ({"price": Decimal(0)}, "price must be greater than 0"),
        ({"fees": Decimal("-0.01")}, "fees must not be negative"),
        ({"side": "hold"}, "side must be one of buy, sell"),
        ({"order_type": "iceberg"}, "order_type must be one of"),
        ({"symbol": ""}, "symbol"),
        ({"symbol": "A B"}, "symbol"),
        ({"symbol": "S" * 33}, "symbol"),
        ({"portfolio_id": True}, "portfolio_id must be an integer"),
        ({"portfolio_id": 2**63}, "portfolio_id must be between"),
        ({"external_id": ""}, "external_id must not be empty"),
        ({"external_id": "e" * 129}, "external_id must be at most 128"),
        ({"external_id": "a\nb"}, "control characters"),
    ],
)
async def test_invalid_trades_are_rejected_before_sql(db, kw, message):
    data = {
        "portfolio_id": 1,
        "symbol": "AAPL",
        "side": "buy",
        "quantity": Decimal(1),
        "price": Decimal(1),
    }
    data.update(kw)
    with count_statements(db.engine) as counter, pytest.raises(InvalidDataError, match=message):
        await record_trade(db, **data)
    assert counter.count == 0


async def test_position_overflow_is_invalid(db):
    pid = (await create_portfolio(db, name="P")).id
    big = Decimal("9999999999")
    await record_trade(db, portfolio_id=pid, symbol="X", side="buy", quantity=big, price=1)
    with pytest.raises(InvalidDataError, match="resulting position quantity exceeds"):
        await record_trade(db, portfolio_id=pid, symbol="X", side="buy", quantity=big, price=1)
    assert (await position(db, pid, "X")).quantity == big


async def test_external_id_makes_a_trade_idempotent(db):
    pid = (await create_portfolio(db, name="P")).id
    kw = {"portfolio_id": pid, "symbol": "ETH", "quantity": Decimal(2), "price": Decimal(3000)}
    first = await record_trade(db, side="buy", external_id="ord-1", **kw)
    again = await record_trade(db, side="buy", external_id="ord-1", **kw)
    assert again.id == first.id
    assert (await position(db, pid, "ETH")).quantity == 2
    assert await count(db, Trade) == 1
    # a sell that closed the position, repeated, still returns the first sell
    sell = await record_trade(db, side="sell", external_id="ord-2", **kw)
    assert (await record_trade(db, side="sell", external_id="ord-2", **kw)).id == sell.id
    assert await position(db, pid, "ETH") is None
    # reusing the id for another trade is a conflict
    with pytest.raises(ConflictError, match="already used for a different trade"):
        await record_trade(db, side="buy", external_id="ord-1", **{**kw, "quantity": 3})
    assert await count(db, Trade) == 2


# -- events -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def subscribed(db, *event_types):
    received: asyncio.Queue = asyncio.Queue()

    async def listen():
        async for event in db.events.subscribe(*event_types):
            await received.put(event)

    task = asyncio.create_task(listen())
    channels = [db.events.channel_for(t) for t in event_types]
    for _ in range(200):  # wait until Redis has the subscription
        numsub = dict(await db.redis.pubsub_numsub(*channels))
        if all(numsub.get(c.encode(), 0) for c in channels):
            break
        await asyncio.sleep(0.01)
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_trade_events_are_published_after_commit(db):
    pid = (await create_portfolio(db, name="P")).id
    async with subscribed(db, TradeExecuted, PositionChanged) as received:
        trade = await record_trade(
            db, portfolio_id=pid, symbol="BTC", side="buy", quantity="0.5", price="60000"
        )
        events = [await asyncio.wait_for(received.get(), 5) for _ in range(2)]
        executed = next(e for e in events if isinstance(e, TradeExecuted))
        changed = next(e for e in events if isinstance(e, PositionChanged))
        assert executed.trade_id == trade.id and executed.portfolio_id == pid
        assert executed.quantity == Decimal("0.5") and executed.side == "buy"
        assert executed.executed_at == trade.executed_at
        assert changed.quantity == Decimal("0.5") and changed.entry_price == Decimal(60000)

        published = db.events.published
        with pytest.raises(InvalidDataError):
            await record_trade(db, portfolio_id=pid, symbol="BTC", side="sell", quantity=9, price=1)
        await record_trade(
            db, portfolio_id=pid, symbol="BTC", side="sell", quantity="0.5", price="1"
        )
        events = [await asyncio.wait_for(received.get(), 5) for _ in range(2)]
        closed = next(e for e in events if isinstance(e, PositionChanged))
        assert closed.quantity == 0 and closed.entry_price is None
        assert db.events.published == published + 2  # nothing for the failed sell


# -- alerts -------------------------------------------------------------------------


async def test_raise_and_acknowledge_alert(db):
    async with subscribed(db, AlertRaised) as received:
        alert = await raise_alert(
            db,
            title="Drawdown",
            message="-7% today",
            severity="critical",
            source="risk",
            tags=("risk", "drawdown", "risk"),
        )
        event = await asyncio.wait_for(received.get(), 5)
    expected = AlertRaised(alert_id=alert.id, title="Drawdown", severity="critical", source="risk")
    ignored = {"event_id", "sequence"}  # made at build time / assigned at commit
    assert event.model_dump(exclude=ignored) == expected.model_dump(exclude=ignored)
    assert event.sequence == 1  # the first event of alert:<id>
    assert alert.tags == ["risk", "drawdown"] and not alert.acknowledged
    acked = await acknowledge_alert(db, alert.id, by="ana")
    assert acked.acknowledged and acked.acknowledged_by == "ana"
    assert acked.acknowledged_at is not None
    again = await acknowledge_alert(db, alert.id, by="bob")
    assert again.acknowledged_by == "ana" and again.acknowledged_at == acked.acknowledged_at
    with pytest.raises(NotFoundError):
        await acknowledge_alert(db, 999_999, by="ana")


@pytest.mark.parametrize(
    "kw",
    [
        {"severity": "panic"},
        {"title": ""},
        {"title": "t" * 201},
        {"message": ""},
        {"source": "s" * 101},
        {"tags": "risk"},
        {"tags": [1]},
        {"tags": ["t" * 65]},
        {"tags": [f"t{i}" for i in range(21)]},
    ],
)
async def test_raise_alert_rejects(db, kw):
    data = {"title": "t", "message": "m", "severity": Severity.INFO, "source": "s"}
    data.update(kw)
    with count_statements(db.engine) as counter, pytest.raises(InvalidDataError):
        await raise_alert(db, **data)
    assert counter.count == 0


async def test_acknowledge_rejects_bad_input(db):
    for alert_id, by in ((0, "ana"), ("1", "ana"), (1, ""), (1, "x" * 65)):
        with pytest.raises(InvalidDataError):
            await acknowledge_alert(db, alert_id, by=by)


# -- concurrency (real pool, separate connections) ---------------------------------------


async def test_fifty_concurrent_trades_end_with_the_exact_quantity(real_db):
    pid = (await create_portfolio(real_db, name="busy")).id
    await record_trade(
        real_db, portfolio_id=pid, symbol="SPY", side="buy", quantity=100, price="500"
    )
    calls = []
    for i in range(50):
        if i % 5 == 0:
            calls.append({"side": "sell", "quantity": Decimal("0.5"), "price": Decimal("501")})
        else:
            calls.append({"side": "buy", "quantity": Decimal("1.25"), "price": Decimal(490 + i)})
    results = await asyncio.gather(
        *(record_trade(real_db, portfolio_id=pid, symbol="SPY", **c) for c in calls)
    )
    assert len({t.id for t in results}) == 50
    expected = Decimal(100) + 40 * Decimal("1.25") - 10 * Decimal("0.5")
    pos = await position(real_db, pid, "SPY")
    assert pos.quantity == expected == Decimal(145)
    assert await count(real_db, Trade, Trade.portfolio_id == pid) == 51


async def test_racing_first_buys_open_one_position(real_db):
    pid = (await create_portfolio(real_db, name="race")).id
    await asyncio.gather(
        *(
            record_trade(real_db, portfolio_id=pid, symbol="NEW", side="buy", quantity=2, price=10)
            for _ in range(10)
        )
    )
    pos = await position(real_db, pid, "NEW")
    assert pos.quantity == 20 and pos.entry_price == 10
    assert await count(real_db, Position) == 1


async def test_racing_duplicate_external_ids_record_one_trade(real_db):
    pid = (await create_portfolio(real_db, name="dup")).id
    kw = {"portfolio_id": pid, "symbol": "SOL", "quantity": Decimal(3), "price": Decimal(150)}
    buys = await asyncio.gather(
        *(record_trade(real_db, side="buy", external_id="dup-buy", **kw) for _ in range(10))
    )
    assert len({t.id for t in buys}) == 1
    assert (await position(real_db, pid, "SOL")).quantity == 3
    sells = await asyncio.gather(
        *(record_trade(real_db, side="sell", external_id="dup-sell", **kw) for _ in range(10))
    )
    assert len({t.id for t in sells}) == 1
    assert await position(real_db, pid, "SOL") is None
    assert await count(real_db, Trade) == 2


async def test_concurrent_acknowledgements_agree(real_db):
    alert = await raise_alert(real_db, title="t", message="m", severity="info", source="s")
    acks = await asyncio.gather(
        *(acknowledge_alert(real_db, alert.id, by=f"user{i}") for i in range(5))
    )
    assert len({a.acknowledged_by for a in acks}) == 1


# -- cache: the cached read uses it, the fresh read and authentication never do ---------


async def test_cached_portfolio_is_served_from_the_cache_and_fresh_read_is_not(db):
    pid = (await create_portfolio(db, name="C")).id
    await record_trade(db, portfolio_id=pid, symbol="AAPL", side="buy", quantity=1, price=1)
    assert (await get_cached_portfolio(db, pid)).positions[0].quantity == 1  # fills the cache
    with count_statements(db.engine) as counter:
        cached = await get_cached_portfolio(db, pid)
    assert counter.count == 0 and cached.positions[0].quantity == 1
    with count_statements(db.engine) as counter:
        fresh = await get_portfolio_with_positions(db, pid)
    assert counter.count >= 1 and fresh.positions[0].quantity == 1
    # a trade invalidates the cached entry
    await record_trade(db, portfolio_id=pid, symbol="AAPL", side="buy", quantity=2, price=1)
    assert (await get_cached_portfolio(db, pid)).positions[0].quantity == 3


async def test_authentication_reads_the_hash_from_postgres_not_the_cache(db):
    await new_user(db)
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.users.get_by_username("ana") is not None  # cached now
    with count_statements(db.engine) as counter:
        user = await authenticate(db, username="ana", password=PASSWORD)
    assert any("password_hash" in s for s in counter.statements)
    assert user.last_login is not None
