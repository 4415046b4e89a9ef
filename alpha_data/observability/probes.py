"""Health probes of read replicas (what ``db.health()`` reports under ``replicas``).

Each probe opens one short-lived connection (no pool), reads the server
version, whether the server is in recovery (a streaming replica is) and how
far its replay lags behind, and closes it. Errors name host, port and
database only: never the URL, which may carry a password.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alpha_data.driver_errors import sqlstate_of
from alpha_data.health import ComponentHealth
from alpha_data.sqlstates import INVALID_CATALOG_NAME, LOGIN_REJECTED
from alpha_data.urls import where

__all__ = ["probe_replica", "probe_replicas", "where"]

_PROBE = text(
    "SELECT current_setting('server_version'), pg_is_in_recovery(),"
    " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8"
)


async def probe_replica(url: str, timeout: float) -> ComponentHealth:
    """Connect to the replica at ``url`` once; report latency, recovery state and lag."""
    place = where(url)
    engine = create_async_engine(
        url, poolclass=NullPool, hide_parameters=True, connect_args={"timeout": timeout}
    )
    started = time.perf_counter()

    async def query() -> Any:
        async with engine.connect() as conn:
            return (await conn.execute(_PROBE)).one()

    try:
        version, in_recovery, lag = await asyncio.wait_for(query(), timeout)
    except Exception as exc:
        code = sqlstate_of(exc)
        if code in LOGIN_REJECTED:
            reason = f"replica at {place} rejected the login (check the user and password)"
        elif code == INVALID_CATALOG_NAME:
            reason = f"database does not exist on the replica at {place}"
        else:
            reason = f"cannot reach replica at {place} ({type(exc).__name__})"
        return ComponentHealth(ok=False, latency_ms=None, error=reason, detail={"where": place})
    finally:
        await engine.dispose()
    return ComponentHealth(
        ok=True,
        latency_ms=(time.perf_counter() - started) * 1000,
        detail={
            "where": place,
            "server_version": str(version),
            "in_recovery": bool(in_recovery),
            "replay_lag_s": None if lag is None else round(float(lag), 3),
        },
    )


async def probe_replicas(urls: list[str], timeout: float) -> dict[str, ComponentHealth]:
    """Probe every replica concurrently; keyed by ``host:port/database``."""
    if not urls:
        return {}
    results = await asyncio.gather(*(probe_replica(u, timeout) for u in urls))
    return {where(u): r for u, r in zip(urls, results, strict=True)}
