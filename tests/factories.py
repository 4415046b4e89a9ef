"""The factories of the test suite are alpha_data's own (:mod:`alpha_data.testing.factories`)."""

from alpha_data.testing.factories import (
    FAKE_HASH,
    AlertFactory,
    ApiKeyFactory,
    PortfolioFactory,
    PositionFactory,
    TradeFactory,
    UserFactory,
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
