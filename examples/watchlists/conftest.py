"""The app's tests run on alpha_data's pytest plugin (database per run, isolated Database, ...)."""

from __future__ import annotations

import pytest

from watchlists import WatchlistUoW, register_rules

pytest_plugins = ["alpha_data.testing"]


@pytest.fixture(scope="session")
def unit_of_work_class() -> type[WatchlistUoW]:
    """``db`` and ``real_db`` build the app's unit of work (``uow.watchlists``).

    The plugin builds its Databases itself (not through ``make_database``), so
    the app's cache rules are declared here.
    """
    register_rules()
    return WatchlistUoW
