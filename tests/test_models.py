"""Models against the migrated schema: every constraint, exact decimals, server times."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import insert, text

from alpha_data.errors import ConflictError, InvalidDataError
from alpha_data.models import ApiKey, Portfolio, Position, User
from alpha_data.testing.factories import (
    ApiKeyFactory,
    PortfolioFactory,
    PositionFactory,
    TradeFactory,
    UserFactory,
)


async def _add(db, obj):
    async with db.unit_of_work() as uow:
        uow.session.add(obj)
        await uow.commit()
    return obj


async def _violates(db, obj, error, constraint):
    with pytest.raises(error) as info:
        await _add(db, obj)
    assert info.value.constraint == constraint, info.value
    return info.value


class _Seeded:
    """One row of each kind, for the violations below to collide with."""

    user: User
    portfolio: Portfolio


async def _seed(db) -> _Seeded:
    seeded = _Seeded()
    seeded.user = await _add(db, UserFactory.build(username="ana", email="Ana@X.io"))
    await _add(db, ApiKeyFactory.build(user_id=seeded.user.id, prefix="abc123"))
    seeded.portfolio = await _add(db, PortfolioFactory.build())
    await _add(db, PositionFactory.build(portfolio_id=seeded.portfolio.id, symbol="AAPL"))
    await _add(db, TradeFactory.build(portfolio_id=seeded.portfolio.id, external_id="ext-1"))
    return seeded


def _case(build, error, constraint, id):
    return pytest.param(build, error, constraint, id=id)


VIOLATIONS = [
    _case(
        lambda s: UserFactory.build(username="ana"), ConflictError, "uq_users_username", "u-name"
    ),
    _case(
        lambda s: UserFactory.build(email="ana@x.IO"),
        ConflictError,
        "uq_users_email_lower",
        "u-email-any-case",
    ),
    _case(
        lambda s: ApiKeyFactory.build(user_id=s.user.id, prefix="abc123"),
        ConflictError,
        "uq_api_keys_prefix",
        "key-prefix",
    ),
    _case(
        lambda s: ApiKeyFactory.build(user_id=999_999_999),
        InvalidDataError,
        "fk_api_keys_user_id_users",
        "key-missing-user",
    ),
    _case(
        lambda s: PositionFactory.build(portfolio_id=s.portfolio.id, symbol="AAPL"),
        ConflictError,
        "uq_positions_portfolio_id_symbol",
        "position-symbol",
    ),
    _case(
        lambda s: PositionFactory.build(portfolio_id=s.portfolio.id, quantity=Decimal("0")),
        InvalidDataError,
        "ck_positions_quantity_positive",
        "position-quantity",
    ),
    _case(
        lambda s: PositionFactory.build(portfolio_id=s.portfolio.id, entry_price=Decimal("-1")),
        InvalidDataError,
        "ck_positions_entry_price_positive",
        "position-price",
    ),
    _case(
        lambda s: TradeFactory.build(portfolio_id=s.portfolio.id, external_id="ext-1"),
        ConflictError,
        "uq_trades_external_id",
        "trade-external-id",
    ),
    _case(
        lambda s: TradeFactory.build(portfolio_id=s.portfolio.id, quantity=Decimal("-5")),
        InvalidDataError,
        "ck_trades_quantity_positive",
        "trade-quantity",
    ),
    _case(
        lambda s: TradeFactory.build(portfolio_id=s.portfolio.id, price=Decimal("0")),
        InvalidDataError,
        "ck_trades_price_positive",
        "trade-price",
    ),
    _case(
        lambda s: TradeFactory.build(portfolio_id=s.portfolio.id, fees=Decimal("-0.01")),
        InvalidDataError,
        "ck_trades_fees_non_negative",
        "trade-fees",
    ),
    _case(
        lambda s: TradeFactory.build(portfolio_id=10**12),
        InvalidDataError,
        "fk_trades_portfolio_id_portfolios",
        "trade-missing-portfolio",
    ),
]


@pytest.mark.parametrize(("build", "error", "constraint"), VIOLATIONS)
async def test_constraint_violations(db, build, error, constraint):
    row = build(await _seed(db))
    err = await _violates(db, row, error, constraint)
    assert type(err) is error and err.table == type(row).__tablename__


async def test_unique_violation_message_names_the_value(db):
    await _add(db, UserFactory.build(username="ana"))
    err = await _violates(db, UserFactory.build(username="ana"), ConflictError, "uq_users_username")
    assert "ana" in err.message and err.table == "users"


async def test_trades_without_external_id_do_not_collide(db):
    p = await _add(db, PortfolioFactory.build())
    await _add(db, TradeFactory.build(portfolio_id=p.id))
    await _add(db, TradeFactory.build(portfolio_id=p.id))  # partial unique index


async def test_role_check(db):
    with pytest.raises(InvalidDataError) as info:
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                text(
                    "INSERT INTO users (username, email, password_hash, role) "
                    "VALUES ('x', 'x@x', 'h', 'root')"
                )
            )
    assert info.value.constraint == "ck_users_role"


async def test_bad_enum_value_rejected_before_sql(db):
    with pytest.raises(InvalidDataError, match="root"):
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                insert(User).values(username="x", email="x@x", password_hash="h", role="root")
            )


async def test_not_null(db):
    user = UserFactory.build()
    user.email = None
    err = await _violates(db, user, InvalidDataError, None)
    assert err.column == "email" and err.sqlstate == "23502"


async def test_trade_side_check(db):
    p = await _add(db, PortfolioFactory.build())
    with pytest.raises(InvalidDataError) as info:
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                text(
                    "INSERT INTO trades (portfolio_id, symbol, side, quantity, price) "
                    "VALUES (:p, 'X', 'hold', 1, 1)"
                ),
                {"p": p.id},
            )
    assert info.value.constraint == "ck_trades_side"


async def test_alert_severity_check(db):
    with pytest.raises(InvalidDataError) as info:
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                text(
                    "INSERT INTO alerts (title, message, severity, source, version) "
                    "VALUES ('t', 'm', 'meh', 's', 1)"
                )
            )
    assert info.value.constraint == "ck_alerts_severity"


async def test_numeric_overflow_is_invalid_data(db):
    p = await _add(db, PortfolioFactory.build())
    with pytest.raises(InvalidDataError) as info:
        await _add(db, PositionFactory.build(portfolio_id=p.id, quantity=Decimal("1e12")))
    assert info.value.sqlstate == "22003"


async def test_decimal_round_trip_is_exact(db):
    p = await _add(db, PortfolioFactory.build())
    qty = Decimal("1234567890.12345678")
    price = Decimal("0.00000001")
    pos = await _add(db, PositionFactory.build(portfolio_id=p.id, quantity=qty, entry_price=price))
    async with db.unit_of_work() as uow:
        raw = (
            await uow.session.execute(
                text("SELECT quantity, entry_price FROM positions WHERE id = :id"), {"id": pos.id}
            )
        ).one()
        loaded = await uow.session.get(Position, pos.id, populate_existing=True)
    assert raw == (qty, price)
    assert loaded is not None
    assert loaded.quantity == qty and isinstance(loaded.quantity, Decimal)
    assert loaded.entry_price == price


async def test_server_timestamps_are_tz_aware_and_updated_at_moves(db):
    p = await _add(db, PortfolioFactory.build())
    assert p.created_at.tzinfo is not None and p.updated_at.tzinfo is not None
    assert p.created_at.utcoffset().total_seconds() == 0
    assert p.version == 1
    before = p.updated_at
    await asyncio.sleep(0.01)
    async with db.unit_of_work() as uow:
        loaded = await uow.portfolios.get_one(p.id)
        loaded.name = "renamed"
        await uow.commit()
    assert loaded.updated_at > before
    assert loaded.version == 2


async def test_updated_at_moves_on_core_update(db):
    u = await _add(db, UserFactory.build())
    async with db.unit_of_work() as uow:
        await uow.session.execute(
            text("UPDATE users SET role = 'admin' WHERE id = :id"), {"id": u.id}
        )
        after = (
            await uow.session.execute(
                text("SELECT updated_at FROM users WHERE id = :id"), {"id": u.id}
            )
        ).scalar_one()
    assert after > u.updated_at


async def test_relationships_refuse_lazy_loads(db):
    from sqlalchemy.exc import InvalidRequestError

    p = await _add(db, PortfolioFactory.build())
    async with db.unit_of_work() as uow:
        loaded = await uow.portfolios.get_one(p.id)
        with pytest.raises(InvalidRequestError):
            _ = loaded.positions


async def test_delete_cascades_follow_schema(db):
    user = await _add(db, UserFactory.build())
    await _add(db, ApiKeyFactory.build(user_id=user.id))
    p = await _add(db, PortfolioFactory.build())
    await _add(db, PositionFactory.build(portfolio_id=p.id))
    await _add(db, TradeFactory.build(portfolio_id=p.id))
    async with db.unit_of_work() as uow:
        await uow.users.delete(user.id)
        await uow.portfolios.delete(p.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.api_keys.count(user_id=user.id) == 0
        remaining = (
            await uow.session.execute(
                text("SELECT count(*) FROM positions WHERE portfolio_id = :p"), {"p": p.id}
            )
        ).scalar_one()
        assert remaining == 0


async def test_repr_hides_secrets(db):
    user = UserFactory.build(password_hash="$argon2id$secret-hash-value")
    key = ApiKeyFactory.build(key_hash="deadbeefsecret")
    assert "secret-hash-value" not in repr(user)
    assert "deadbeefsecret" not in repr(key)
    assert isinstance(user, User) and isinstance(key, ApiKey) and Portfolio
