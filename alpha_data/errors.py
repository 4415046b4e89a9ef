"""The typed errors that callers catch, and the SQLSTATE → error translation.

Classification reads SQLSTATE codes (and exception types for connection
loss), never message text. Messages name the table/constraint/column but
never parameter values that could be secret.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "DataLayerError",
    "DatabaseUnavailableError",
    "InvalidDataError",
    "NotFoundError",
    "PermissionDeniedError",
    "ReadOnlyError",
    "TransientError",
    "UnitOfWorkStateError",
    "translate",
]


class DataLayerError(Exception):
    """Base of every error alpha_data raises on purpose."""

    status_code: int = 500

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        table: str | None = None,
        constraint: str | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.table = table
        self.constraint = constraint
        self.column = column

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class NotFoundError(DataLayerError):
    """The row asked for does not exist (HTTP 404)."""

    status_code = 404


class ConflictError(DataLayerError):
    """Unique/foreign-key/exclusion violation or a stale optimistic-lock version (409)."""

    status_code = 409


class InvalidDataError(DataLayerError, ValueError):
    """Bad input, caught before SQL or by a check/not-null/data error (422)."""

    status_code = 422


class ReadOnlyError(InvalidDataError):
    """A write was attempted in a read-only unit of work."""


class TransientError(DataLayerError):
    """Serialization failure, deadlock, lost connection or pool timeout (503, retry later).

    ``outcome_unknown`` is true when the connection was lost while COMMIT was in
    flight: the transaction may or may not have committed. ``retryable`` is
    false for failures that re-running at once would not cure (statement
    timeout, pool timeout); ``Database.run`` re-runs only retryable ones.
    """

    status_code = 503

    def __init__(
        self,
        message: str,
        *,
        outcome_unknown: bool = False,
        retryable: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.outcome_unknown = outcome_unknown
        self.retryable = retryable


class DatabaseUnavailableError(TransientError):
    """PostgreSQL cannot be reached at all (503)."""


class AuthenticationError(DataLayerError):
    """Wrong password, or an unknown, expired or revoked API key (401)."""

    status_code = 401


class PermissionDeniedError(DataLayerError):
    """A valid API key without the permission required (403)."""

    status_code = 403


class UnitOfWorkStateError(DataLayerError, RuntimeError):
    """A unit of work used outside its ``async with`` block, or entered twice."""


# SQLSTATEs that a retry can cure.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
_CONFLICT = frozenset({"23505", "23503", "23P01"})
_INVALID = frozenset({"23514", "23502", "23000", "23001"})
_CONNECTION_CLASSES = ("08", "57P")  # connection exceptions, admin shutdown/crash
_TIMEOUT = "57014"  # query_canceled: statement_timeout
# A client-side timeout (asyncpg command_timeout/connect timeout); distinct before 3.11.
_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError)

_KEY_DETAIL = re.compile(r"Key \((?P<cols>.+?)\)=\((?P<vals>.*)\)")

# Human messages for the constraints of our own schema.
_CONSTRAINT_MESSAGES: dict[str, str] = {
    "uq_users_username": "username {value} is already taken",
    "uq_users_email_lower": "email {value} is already registered",
    "uq_api_keys_prefix": "API key prefix collision; mint the key again",
    "uq_positions_portfolio_id_symbol": "portfolio already holds a position in {value}",
    "uq_trades_external_id": "a trade with external id {value} already exists",
}


def _chain(exc: BaseException, *, implicit: bool = True) -> Iterator[BaseException]:
    """``exc`` and its causes (with ``implicit``, also the exceptions it interrupted)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (current.__context__ if implicit else None)


def _postgres_error(exc: BaseException) -> Any | None:
    """Find the asyncpg error (it carries sqlstate and names) in the cause chain."""
    for current in _chain(exc):
        if getattr(current, "sqlstate", None) and hasattr(current, "constraint_name"):
            return current
    orig = getattr(exc, "orig", None)
    if orig is not None and getattr(orig, "sqlstate", None):
        return orig
    return None


def _is_connection_loss(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    for current in _chain(exc):
        name = type(current).__name__
        if isinstance(current, (ConnectionError, asyncio.IncompleteReadError)):
            return True
        # InternalClientError: asyncpg's protocol state broke (typically a FATAL
        # from a terminated backend racing the next statement); the connection
        # is unusable, so it is a lost connection for the caller.
        if name in ("ConnectionDoesNotExistError", "ConnectionFailureError", "InternalClientError"):
            return True
        if isinstance(current, OSError) and not isinstance(current, FileNotFoundError):
            return True
    return False


def is_database_error(exc: BaseException) -> bool:
    """True for driver/SQLAlchemy errors that ``translate`` knows how to classify."""
    kinds = (sa_exc.DBAPIError, sa_exc.TimeoutError, orm_exc.StaleDataError, OSError, *_TIMEOUTS)
    if isinstance(exc, kinds) or type(exc).__module__.startswith("asyncpg"):
        return True
    return isinstance(exc, sa_exc.StatementError) and isinstance(
        exc.orig, (LookupError, ValueError, TypeError)
    )


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE carried by ``exc`` (or its cause), if any."""
    pg = _postgres_error(exc)
    return str(pg.sqlstate) if pg is not None else None


def is_retryable(exc: BaseException) -> bool:
    """True for errors that re-running the whole transaction can cure."""
    if isinstance(exc, TransientError):
        return (
            exc.retryable
            and not exc.outcome_unknown
            and not isinstance(exc, DatabaseUnavailableError)
        )
    return False


def _describe(pg: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(table, constraint, column, value) as PostgreSQL named them."""
    table = getattr(pg, "table_name", None)
    constraint = getattr(pg, "constraint_name", None)
    column = getattr(pg, "column_name", None)
    value = None
    detail = getattr(pg, "detail", None) or ""
    match = _KEY_DETAIL.search(detail)
    if match:
        cols = match.group("cols")
        if column is None:
            column = re.sub(r"[^a-z0-9_, ]", "", cols.removeprefix("lower(").replace("::text", ""))
        value = match.group("vals")
    return table, constraint, column, value


def translate(exc: BaseException) -> DataLayerError:
    """Map a driver/SQLAlchemy exception to the alpha_data error a caller handles."""
    if isinstance(exc, DataLayerError):
        return exc
    if isinstance(exc, orm_exc.StaleDataError):
        return ConflictError(
            "the row was changed or deleted by someone else since it was read; reload and retry"
        )
    if isinstance(exc, sa_exc.TimeoutError):
        return TransientError(
            "connection pool exhausted: no connection free within pool_timeout", retryable=False
        )
    if (
        isinstance(exc, sa_exc.StatementError)
        and not isinstance(exc, sa_exc.DBAPIError)
        and isinstance(exc.orig, (LookupError, ValueError, TypeError))
    ):
        # Raised by SQLAlchemy's type processing before anything was sent.
        return InvalidDataError(f"invalid value: {str(exc.orig).splitlines()[0][:200]}")
    pg = _postgres_error(exc)
    code = str(pg.sqlstate) if pg is not None else None
    if code is not None:
        table, constraint, column, value = _describe(pg)
        kw: dict[str, Any] = {
            "sqlstate": code,
            "table": table,
            "constraint": constraint,
            "column": column,
        }
        if code in _CONFLICT:
            return ConflictError(_conflict_message(code, table, constraint, column, value), **kw)
        if code in _INVALID or code.startswith("22"):
            message = _invalid_message(code, table, constraint, column)
            pg_message = str(getattr(pg, "message", None) or "").strip()
            if code.startswith("22") and pg_message:
                message = f"{message}: {pg_message.splitlines()[0][:200]}"
            return InvalidDataError(message, **kw)
        if code in RETRYABLE_SQLSTATES:
            kind = "serialization failure" if code == "40001" else "deadlock detected"
            return TransientError(f"{kind}; the transaction can be retried", **kw)
        if code == _TIMEOUT:
            return TransientError(
                "statement cancelled: statement_timeout exceeded", retryable=False, **kw
            )
        if code.startswith(_CONNECTION_CLASSES):
            return TransientError(f"database connection lost (SQLSTATE {code})", **kw)
        if code == "25006":
            return ReadOnlyError("cannot write in a read-only transaction", **kw)
        return DataLayerError(f"database error (SQLSTATE {code})", **kw)
    if _is_data_error(exc):
        return InvalidDataError(f"invalid value for a query parameter: {_first_line(exc)}")
    if any(isinstance(c, _TIMEOUTS) for c in _chain(exc, implicit=False)):
        # asyncpg's command_timeout or connect timeout: no reply at all (a silent
        # network path); like statement_timeout, re-running at once will not cure it.
        return TransientError(
            "no reply from PostgreSQL in time (connect_timeout, or statement_timeout + margin): "
            "the network path or the server is silent; the connection was dropped",
            retryable=False,
        )
    if _is_connection_loss(exc):
        return TransientError("database connection lost")
    return DataLayerError(f"unexpected database error: {type(exc).__name__}")


def _is_data_error(exc: BaseException) -> bool:
    """A driver-side DataError (a parameter asyncpg could not encode), no SQLSTATE."""
    if type(exc).__name__ == "DataError":
        return True
    return any(
        type(c).__name__ == "DataError" and type(c).__module__.startswith("asyncpg")
        for c in _chain(exc, implicit=False)
    )


def _first_line(exc: BaseException) -> str:
    *_, current = _chain(exc, implicit=False)
    text = str(current).splitlines()[0] if str(current) else type(current).__name__
    return text[:200]


def _conflict_message(
    code: str, table: str | None, constraint: str | None, column: str | None, value: str | None
) -> str:
    shown = f"'{value}'" if value is not None and len(value) <= 200 else "(value)"
    if constraint in _CONSTRAINT_MESSAGES:
        return _CONSTRAINT_MESSAGES[constraint].format(value=shown)
    if code == "23505":
        return f"{column or 'value'} {shown} already exists in {table or 'the table'}"
    if code == "23503":
        return f"{table or 'row'} refers to a missing or still-referenced row ({constraint})"
    return f"conflicting row in {table or 'the table'} ({constraint})"


def _invalid_message(
    code: str, table: str | None, constraint: str | None, column: str | None
) -> str:
    if code == "23502":
        return f"{table}.{column} must not be null"
    if code == "23514":
        return f"value violates check {constraint} on {table}"
    return f"invalid data (SQLSTATE {code}){f' in {table}.{column}' if column else ''}"
