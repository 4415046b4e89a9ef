"""Retrying: backoff with full jitter, waiting for PostgreSQL at start-up, ``Database.run``.

Two loops share one backoff: ``wait_for_server`` (``Database.connect``) retries
until ``connect_timeout`` unless the failure is one retrying cannot cure
(``refusal``); ``run_with_retries`` (``Database.run``) re-runs a whole unit of
work on transient failures. Both log on ``alpha_data.database``, the logger
name docs/operations.md documents for them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from alpha_data.driver_errors import sqlstate_of
from alpha_data.errors import DatabaseUnavailableError, TransientError, is_retryable
from alpha_data.observability.stats import Counters
from alpha_data.sqlstates import INVALID_CATALOG_NAME, LOGIN_REJECTED
from alpha_data.uow import UnitOfWork
from alpha_data.urls import database_name, server_address

__all__ = ["backoff_delay", "refusal", "run_with_retries", "wait_for_server"]

#: The documented logger of start-up and transaction retries (see the module docstring).
log = logging.getLogger("alpha_data.database")

T = TypeVar("T")
W = TypeVar("W", bound=UnitOfWork)

_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with full jitter for the given (1-based) attempt."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))  # noqa: S311


def refusal(exc: BaseException, where: str = "", name: str = "") -> str | None:
    """A reason that retrying cannot cure: missing database or rejected login."""
    code = sqlstate_of(exc)
    if code == INVALID_CATALOG_NAME:
        return f"database {name!r} does not exist at {where} (run: alpha-data db create)"
    if code in LOGIN_REJECTED:
        return f"PostgreSQL at {where} rejected the login (check the user and password)"
    return None


async def wait_for_server(
    probe: Callable[[], Awaitable[object]], *, timeout: float, url: str
) -> None:
    """Await ``probe()`` until the server at ``url`` answers, retrying for ``timeout`` seconds.

    Raises DatabaseUnavailableError naming host and port: at once on a
    ``refusal`` (missing database, rejected login), else once the time is up.
    """
    where = server_address(url)
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            remaining = max(0.1, deadline - time.monotonic())
            await asyncio.wait_for(probe(), remaining)
            break
        except Exception as exc:
            refused = refusal(exc, where, database_name(url))
            if refused or time.monotonic() + 0.05 >= deadline:
                reason = refused or (
                    f"cannot reach PostgreSQL at {where} after {attempt} attempts "
                    f"({type(exc).__name__})"
                )
                raise DatabaseUnavailableError(
                    f"{reason}; set ALPHA_DATA_DATABASE_URL to point elsewhere"
                ) from None
            await asyncio.sleep(min(backoff_delay(attempt), max(0.0, deadline - time.monotonic())))


async def run_with_retries(
    unit_of_work: Callable[[], W],
    fn: Callable[[W], Awaitable[T]],
    *,
    attempts: int,
    idempotent: bool,
    counters: Counters,
) -> T:
    """Run ``fn(uow)`` in a fresh ``unit_of_work()`` and commit; re-run it on transient failures.

    Retries serialization failures, deadlocks and connections lost before
    COMMIT was sent (backoff with full jitter). A connection lost while
    COMMIT was in flight is retried only when ``idempotent`` is true.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    attempt = 0
    while True:
        attempt += 1
        try:
            uow = unit_of_work()
            uow.attempt = attempt
            async with uow:
                result = await fn(uow)
                await uow.commit()
            return result
        except TransientError as exc:
            retry = is_retryable(exc) or (idempotent and exc.outcome_unknown)
            if not retry:
                raise
            if attempt >= attempts:
                raise _gave_up(exc, attempt, attempts) from exc
            delay = backoff_delay(attempt)
            if counters.enabled:
                counters.retried += 1
            _log_retry(exc, attempt, attempts, delay)
            await asyncio.sleep(delay)


def _gave_up(exc: TransientError, attempt: int, attempts: int) -> TransientError:
    """Log that the retries ran out; the error ``run`` raises then (from ``exc``)."""
    log.warning(
        "transaction failed after %d attempts (SQLSTATE %s)",
        attempt,
        exc.sqlstate,
        extra={
            "attempt": attempt,
            "attempts": attempts,
            "sqlstate": exc.sqlstate,
            "error": type(exc).__name__,
        },
    )
    return TransientError(
        f"gave up after {attempts} attempts: {exc.message}",
        sqlstate=exc.sqlstate,
    )


def _log_retry(exc: TransientError, attempt: int, attempts: int, delay: float) -> None:
    """Log one re-run of a transaction (INFO, with the fields operations.md lists)."""
    log.info(
        "retrying transaction after attempt %d of %d (SQLSTATE %s, backoff %.3f s)",
        attempt,
        attempts,
        exc.sqlstate,
        delay,
        extra={
            "attempt": attempt,
            "attempts": attempts,
            "sqlstate": exc.sqlstate,
            "error": type(exc).__name__,
            "backoff_s": delay,
        },
    )
