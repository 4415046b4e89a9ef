"""Typed declarative models, one module per aggregate."""

from alpha_data.models.alert import Alert, Severity
from alpha_data.models.base import Base, StrEnum, metadata
from alpha_data.models.json import TrackedJSON
from alpha_data.models.portfolio import OrderType, Portfolio, Position, Side, Trade, TradeStatus
from alpha_data.models.user import ApiKey, Role, User

__all__ = [
    "Alert",
    "ApiKey",
    "Base",
    "OrderType",
    "Portfolio",
    "Position",
    "Role",
    "Severity",
    "Side",
    "StrEnum",
    "TrackedJSON",
    "Trade",
    "TradeStatus",
    "User",
    "metadata",
]
