"""Which PostgreSQL and Redis servers a test run uses: one function decides.

``ALPHA_DATA_TEST_SERVER_URL`` (an asyncpg URL of a server on which a database
per run is created; default the local server) and ``ALPHA_DATA_TEST_REDIS_URL``
(default db 15 of the local Redis). :func:`resolve_servers` is the single place
that answers, so another source (an embedded PostgreSQL/Redis started when
nothing answers) plugs in here without touching the fixtures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "DEFAULT_REDIS_URL",
    "DEFAULT_SERVER_URL",
    "REDIS_URL_ENV",
    "SERVER_URL_ENV",
    "TestServers",
    "resolve_servers",
]

SERVER_URL_ENV = "ALPHA_DATA_TEST_SERVER_URL"
REDIS_URL_ENV = "ALPHA_DATA_TEST_REDIS_URL"
DEFAULT_SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


@dataclass(frozen=True)
class TestServers:
    """The servers of a test run (URLs may hold a password: never log them)."""

    __test__ = False  # not a test class, whatever pytest's collection rules say

    #: asyncpg URL of a maintenance database; the run's database is created beside it.
    postgres_url: str
    #: Redis URL; each test uses its own key prefix on it.
    redis_url: str


@lru_cache(maxsize=1)
def resolve_servers() -> TestServers:
    """The run's servers: from the environment, else the local defaults (once per process)."""
    return TestServers(
        postgres_url=os.environ.get(SERVER_URL_ENV, DEFAULT_SERVER_URL),
        redis_url=os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL),
    )
