"""Factories: alpha_data's for its models, one of the app's own for watchlists."""

from __future__ import annotations

from typing import Any

from alpha_data.testing.factories import UserFactory
from factory.base import Factory
from factory.declarations import Sequence

from watchlists import Watchlist

__all__ = ["UserFactory", "WatchlistFactory"]


class WatchlistFactory(Factory[Any]):
    """Builds (never stores) a Watchlist; set ``user_id`` to an existing user's."""

    class Meta:
        model = Watchlist

    name = Sequence(lambda n: f"list {n}")  # type: ignore[no-untyped-call]
    symbols = ["AAPL", "MSFT"]
