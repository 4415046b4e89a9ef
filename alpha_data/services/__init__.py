"""The use cases of alpha_data: each one a unit of work on a ``Database``.

Every service takes the Database first and keyword-only arguments after it,
validates its input before any SQL (InvalidDataError), and publishes its
events only after its transaction committed.
"""

from alpha_data.services.alerts import acknowledge_alert, raise_alert
from alpha_data.services.metrics import insert_portfolio_metrics, insert_portfolio_metrics_batch
from alpha_data.services.portfolios import (
    create_portfolio,
    get_cached_portfolio,
    get_portfolio_with_positions,
)
from alpha_data.services.trades import record_trade, weighted_entry_price
from alpha_data.services.users import (
    authenticate,
    authenticate_api_key,
    create_user,
    issue_api_key,
)

__all__ = [
    "acknowledge_alert",
    "authenticate",
    "authenticate_api_key",
    "create_portfolio",
    "create_user",
    "get_cached_portfolio",
    "get_portfolio_with_positions",
    "insert_portfolio_metrics",
    "insert_portfolio_metrics_batch",
    "issue_api_key",
    "raise_alert",
    "record_trade",
    "weighted_entry_price",
]
