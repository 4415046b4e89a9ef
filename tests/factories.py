"""factory-boy factories for every model.

Pattern for the async session: factories only *build* objects (factory-boy's
own persistence is synchronous); a test stores them through a repository, so
the same constraints and flush path as production code apply::

    user = await uow.users.add(UserFactory.build())
    portfolio = await uow.portfolios.add(PortfolioFactory.build())
    await uow.portfolios.add_position(PositionFactory.build(portfolio_id=portfolio.id))
"""

from __future__ import annotations

from decimal import Decimal

import factory

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

# A real argon2id hash of "not-a-real-password" (factories never hash at build time).
FAKE_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$7L2ixr0mKJJcpoFgWp4EBVK1hUWpbk+ISnrhbGUlP3Y"


class UserFactory(factory.Factory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password_hash = FAKE_HASH
    role = Role.TRADER


class ApiKeyFactory(factory.Factory):
    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda n: f"key{n}")
    prefix = factory.Sequence(lambda n: f"ak{n:08d}")
    key_hash = factory.Sequence(lambda n: f"{n:064x}")
    permissions = factory.LazyFunction(lambda: ["read"])


class PortfolioFactory(factory.Factory):
    class Meta:
        model = Portfolio

    name = factory.Sequence(lambda n: f"Portfolio {n}")
    description = "test book"


class PositionFactory(factory.Factory):
    class Meta:
        model = Position

    symbol = factory.Sequence(lambda n: f"SYM{n}")
    quantity = Decimal("10")
    entry_price = Decimal("100.5")


class TradeFactory(factory.Factory):
    class Meta:
        model = Trade

    symbol = "AAPL"
    side = Side.BUY
    quantity = Decimal("1")
    price = Decimal("190.25")
    fees = Decimal("0")
    order_type = OrderType.MARKET
    status = TradeStatus.FILLED


class AlertFactory(factory.Factory):
    class Meta:
        model = Alert

    title = factory.Sequence(lambda n: f"Alert {n}")
    message = "drawdown above threshold"
    severity = Severity.WARNING
    source = "risk"
    tags = factory.LazyFunction(lambda: ["risk"])
