# mypy: disallow-untyped-calls=False
# (factory-boy's declarations are untyped; the classes built here are what tests use.)
"""factory-boy base factories for the library's models (needs ``factory-boy``).

Pattern for the async session: factories only *build* objects (factory-boy's
own persistence is synchronous); a test stores them through a repository, so
the same constraints and flush path as production code apply::

    user = await uow.users.add(UserFactory.build())
    portfolio = await uow.portfolios.add(PortfolioFactory.build())
    await uow.portfolios.add_position(PositionFactory.build(portfolio_id=portfolio.id))

An application subclasses them (``class OwnerFactory(UserFactory)``) or writes
its own ``factory.Factory`` for its models the same way.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from factory.base import Factory
from factory.declarations import LazyAttribute, LazyFunction, Sequence

from alpha_data.models import (
    Alert,
    ApiKey,
    OrderType,
    Portfolio,
    Position,
    Role,
    Severity,
    Side,
    Trade,
    TradeStatus,
    User,
)

__all__ = [
    "FAKE_HASH",
    "AlertFactory",
    "ApiKeyFactory",
    "PortfolioFactory",
    "PositionFactory",
    "TradeFactory",
    "UserFactory",
]

#: A real argon2id hash of "not-a-real-password" (factories never hash at build time).
FAKE_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$7L2ixr0mKJJcpoFgWp4EBVK1hUWpbk+ISnrhbGUlP3Y"


class UserFactory(Factory[Any]):
    class Meta:
        model = User

    username = Sequence(lambda n: f"user{n}")
    email = LazyAttribute(lambda o: f"{o.username}@example.com")
    password_hash = FAKE_HASH
    role = Role.TRADER


class ApiKeyFactory(Factory[Any]):
    class Meta:
        model = ApiKey

    name = Sequence(lambda n: f"key{n}")
    prefix = Sequence(lambda n: f"ak{n:08d}")
    key_hash = Sequence(lambda n: f"{n:064x}")
    permissions = LazyFunction(lambda: ["read"])


class PortfolioFactory(Factory[Any]):
    class Meta:
        model = Portfolio

    name = Sequence(lambda n: f"Portfolio {n}")
    description = "test book"


class PositionFactory(Factory[Any]):
    class Meta:
        model = Position

    symbol = Sequence(lambda n: f"SYM{n}")
    quantity = Decimal("10")
    entry_price = Decimal("100.5")


class TradeFactory(Factory[Any]):
    class Meta:
        model = Trade

    symbol = "AAPL"
    side = Side.BUY
    quantity = Decimal("1")
    price = Decimal("190.25")
    fees = Decimal("0")
    order_type = OrderType.MARKET
    status = TradeStatus.FILLED


class AlertFactory(Factory[Any]):
    class Meta:
        model = Alert

    title = Sequence(lambda n: f"Alert {n}")
    message = "drawdown above threshold"
    severity = Severity.WARNING
    source = "risk"
    tags = LazyFunction(lambda: ["risk"])
