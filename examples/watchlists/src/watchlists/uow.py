"""The app's unit of work: the library's repositories plus ``uow.watchlists``."""

from __future__ import annotations

from alpha_data import Database, Settings, UnitOfWork

from watchlists.repository import WatchlistRepository, register_rules

__all__ = ["WatchlistUoW", "make_database"]


class WatchlistUoW(UnitOfWork):
    """``uow.users`` etc. as in alpha_data, and this app's watchlists."""

    @property
    def watchlists(self) -> WatchlistRepository:
        """One WatchlistRepository per unit of work, bound to its session."""
        return self.repository(WatchlistRepository)


def make_database(settings: Settings | None = None) -> Database[WatchlistUoW]:
    """The app's Database: its units of work are WatchlistUoWs; the app's cache rules declared."""
    register_rules()
    return Database(settings, unit_of_work_class=WatchlistUoW)
