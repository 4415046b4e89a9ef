"""Watchlists: an example application extending alpha_data with an aggregate of its own."""

from watchlists.models import Watchlist
from watchlists.repository import WATCHLIST_OWNER, WatchlistRepository, register_rules
from watchlists.uow import WatchlistUoW, make_database

__all__ = [
    "WATCHLIST_OWNER",
    "Watchlist",
    "WatchlistRepository",
    "WatchlistUoW",
    "make_database",
    "register_rules",
]
