"""The library's cache tag rules: which cached reads a write of each of its models dirties.

Registered explicitly by ``register_rules()``, which every ``Database`` calls
when it is built (importing a repository module registers nothing). Rules
compose (``invalidated_by`` adds), so calling it again, or an application
adding its own specs for the same models before or after, keeps all of them.
Rows PostgreSQL deletes or nulls through foreign keys need no rule here:
``alpha_data.cache.cascade`` derives them from the metadata.
"""

from __future__ import annotations

from alpha_data.cache import invalidated_by
from alpha_data.models import Alert, ApiKey, Portfolio, Position, Trade, User
from alpha_data.repositories.alerts import OPEN_ALERTS
from alpha_data.repositories.portfolios import PORTFOLIO_ID
from alpha_data.repositories.users import USER_EMAIL, USER_ID, USER_NAME

__all__ = ["register_rules"]


def register_rules() -> None:
    """Declare the tag rules of the library's models (idempotent)."""
    invalidated_by(User, USER_ID, USER_NAME, USER_EMAIL)
    invalidated_by(ApiKey)  # no cached read of the library returns API keys
    invalidated_by(Portfolio, PORTFOLIO_ID)
    invalidated_by(Position, PORTFOLIO_ID.of("portfolio_id"))
    invalidated_by(Trade)  # no cached read of the library returns trades
    invalidated_by(Alert, OPEN_ALERTS)
