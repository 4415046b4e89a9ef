"""Fixtures of the server-free unit tests: no PostgreSQL, no Redis.

Nothing here (or in the tests below this directory) asks for the top-level
``db``/``settings``/``database_url`` fixtures, so ``pytest tests/unit`` runs on a
machine without servers. Each fixture the unit tests share is defined once here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from alpha_data.security import use_password_hasher

#: argon2id with the smallest parameters: fast tests, same code path.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def fast_hasher() -> Iterator[PasswordHasher]:
    """The fast hasher installed for the duration of one test."""
    with use_password_hasher(FAST_HASHER) as hasher:
        yield hasher


_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the server-free unit tests first in any session that collects them.

    A broken invariant then fails in seconds, before the suites that need
    PostgreSQL and Redis start; the order of everything else is kept (stable sort).
    """
    items.sort(key=lambda item: 0 if _HERE in item.path.parents else 1)
