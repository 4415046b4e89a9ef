"""Which PostgreSQL and Redis servers a test run uses: one function decides.

``ALPHA_DATA_TEST_SERVER_URL`` (an asyncpg URL of a server on which a database
per run is created; default the local server) and ``ALPHA_DATA_TEST_REDIS_URL``
(default db 15 of the local Redis). When no server URL is configured and
nothing answers at the default one, or ``ALPHA_DATA_TEST_EMBEDDED=1``, the
embedded PostgreSQL and Redis (``alpha_data[embedded]``) are started and used,
so an application's CI needs no services.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "DEFAULT_REDIS_URL",
    "DEFAULT_SERVER_URL",
    "EMBEDDED_ENV",
    "REDIS_URL_ENV",
    "SERVER_URL_ENV",
    "TestServers",
    "resolve_servers",
]

SERVER_URL_ENV = "ALPHA_DATA_TEST_SERVER_URL"
REDIS_URL_ENV = "ALPHA_DATA_TEST_REDIS_URL"
EMBEDDED_ENV = "ALPHA_DATA_TEST_EMBEDDED"
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
    """The run's servers: configured, the local defaults, or embedded (once per process)."""
    server = os.environ.get(SERVER_URL_ENV)
    redis_url = os.environ.get(REDIS_URL_ENV)
    if os.environ.get(EMBEDDED_ENV) != "1":
        from alpha_data.embedded import server_answers

        if server is not None or server_answers(DEFAULT_SERVER_URL):
            return TestServers(server or DEFAULT_SERVER_URL, redis_url or DEFAULT_REDIS_URL)
    from alpha_data.embedded import ensure_servers

    embedded = ensure_servers()
    return TestServers(
        embedded.server_url, redis_url or embedded.redis_url.replace("db=0", "db=15")
    )
