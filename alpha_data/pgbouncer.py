"""asyncpg connection arguments, and what changes behind PgBouncer in transaction pooling.

PgBouncer (1.18, Debian 12) in ``pool_mode = transaction`` hands a server
connection to a client for one transaction only, so nothing may outlive a
transaction on the server side. With ``pgbouncer_mode``:

* Prepared statements: asyncpg's statement cache and SQLAlchemy's prepared
  statement cache are off, and SQLAlchemy prepares *unnamed* statements
  (``prepared_statement_name_func`` returns ``""``). With its cache off,
  asyncpg re-sends the Parse of an unnamed statement together with Bind/
  Execute/Sync, so each statement is self-contained even in autocommit (the
  read-only path) where PgBouncer may move the client between Parse and
  Bind; no named statement is left behind on a server connection. (Unique
  uuid names, as SQLAlchemy's docs suggest, avoid name clashes but leave one
  prepared statement per query on the server connections and still break in
  autocommit when Bind lands on another server.)
* Session settings: ``statement_timeout`` is not sent as a startup parameter
  (PgBouncer rejects unknown ones); set it on the server side instead
  (``ALTER ROLE ... SET statement_timeout`` or ``connect_query`` in
  pgbouncer.ini). ``application_name`` is tracked by PgBouncer and still
  sent. ``Database.connect()`` warns when the timeout seen through PgBouncer
  is not ``statement_timeout``.
* Read-only units of work: without PgBouncer they run in autocommit on a
  pool of their own whose connections start with
  ``default_transaction_read_only=on`` (no BEGIN/ROLLBACK round trips).
  That is a startup parameter, which PgBouncer does not pass to its server
  connections, so in pgbouncer_mode they run as ``BEGIN READ ONLY``
  transactions on the one pool instead (two more round trips per unit of
  work, and the same refusal of raw writes).
* alpha_data holds no other session state: advisory locks are transaction
  scoped (``pg_advisory_xact_lock``), no SET, no LISTEN (events use Redis).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from alpha_data.settings import Settings

__all__ = ["check_statement_timeout", "connect_args"]

log = logging.getLogger("alpha_data.pgbouncer")

APPLICATION_NAME = "alpha_data"


def _unnamed_statement() -> str:
    """SQLAlchemy's prepared statement name: ``""`` = PostgreSQL's unnamed statement."""
    return ""


#: How long past ``statement_timeout`` the client waits for a reply before giving up on
#: the connection (the server's own timeout answers first whenever the server is reachable).
CLIENT_TIMEOUT_MARGIN = 2.0

#: Server-side TCP keepalives (seconds, probes): PostgreSQL notices a client whose
#: network path died and ends its backend (and any transaction it held open).
_KEEPALIVES = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10"}


def client_timeout(settings: Settings) -> float | None:
    """asyncpg's ``command_timeout``: ``statement_timeout`` + a margin (None when disabled).

    A statement the server never sees (a silent network path, a hung proxy)
    gets no reply and no statement_timeout; this bounds the wait on the
    client side for every statement, BEGIN, COMMIT and ROLLBACK.
    """
    if settings.statement_timeout <= 0:
        return None
    return settings.statement_timeout + CLIENT_TIMEOUT_MARGIN


def connect_args(settings: Settings, *, read_only: bool = False) -> dict[str, Any]:
    """asyncpg ``connect()`` arguments for ``settings`` (PgBouncer-safe in pgbouncer_mode).

    ``read_only``: connections whose every transaction is READ ONLY
    (``default_transaction_read_only`` as a startup parameter), for the
    read-only pool on the primary. PgBouncer does not forward startup
    parameters to its server connections, so in pgbouncer_mode this raises
    ValueError: read-only units of work there run as READ ONLY transactions.
    """
    if read_only and settings.pgbouncer_mode:
        raise ValueError("startup parameters do not reach the server through PgBouncer")
    server_settings = {"application_name": APPLICATION_NAME}
    if read_only:
        server_settings["default_transaction_read_only"] = "on"
    args: dict[str, Any] = {
        "timeout": settings.connect_timeout,  # bounds a connect that hangs (pool checkout too)
        "command_timeout": client_timeout(settings),
        "server_settings": server_settings,
    }
    if not settings.pgbouncer_mode:
        server_settings["statement_timeout"] = str(_timeout_ms(settings))
        server_settings.update(_KEEPALIVES)
        return args
    args.update(
        statement_cache_size=0,
        prepared_statement_cache_size=0,
        prepared_statement_name_func=_unnamed_statement,
    )
    return args


def _timeout_ms(settings: Settings) -> int:
    return int(settings.statement_timeout * 1000)


async def check_statement_timeout(engine: AsyncEngine, settings: Settings) -> bool:
    """Warn (and return False) when the server's statement_timeout is not the configured one.

    Behind PgBouncer the timeout comes from the server side; this checks it
    once at start-up. Never raises.
    """
    try:
        async with engine.connect() as conn:
            row = await conn.execute(
                text("SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'")
            )
            seen = int(row.scalar_one())
    except Exception as exc:
        log.warning("could not read statement_timeout through PgBouncer: %s", type(exc).__name__)
        return False
    wanted = _timeout_ms(settings)
    if seen != wanted:
        log.warning(
            "statement_timeout is %d ms on the server but %d ms in Settings; in pgbouncer_mode "
            "set it server-side (ALTER ROLE ... SET statement_timeout, or connect_query in "
            "pgbouncer.ini)",
            seen,
            wanted,
        )
        return False
    return True
