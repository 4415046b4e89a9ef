"""Fixtures of the server-free unit tests: no PostgreSQL, no Redis.

Nothing here (or in the tests below this directory) asks for the top-level
``db``/``settings``/``database_url`` fixtures, so ``pytest tests/unit`` runs on a
machine without servers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The fast password hasher comes from alpha_data.testing (autouse, no servers).

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the server-free unit tests first in any session that collects them.

    A broken invariant then fails in seconds, before the suites that need
    PostgreSQL and Redis start; the order of everything else is kept (stable sort).
    """
    items.sort(key=lambda item: 0 if _HERE in item.path.parents else 1)
