"""The typed errors that callers catch, and the SQLSTATE → error translation.

Classification reads SQLSTATE codes (``alpha_data.sqlstates``) and exception
types for connection loss (``alpha_data.driver_errors``), never message
text. Messages name the table/constraint/column but never parameter values
that could be secret.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc

from alpha_data import schema_names as names
from alpha_data.driver_errors import (
    TIMEOUTS,
    cause_chain,
    describe,
    first_line,
    is_connection_loss,
    is_data_error,
    postgres_error,
    writes_child,
)

# is_database_error, sqlstate_of and RETRYABLE_SQLSTATES are re-exported (``x as x``):
# uow and observability.sqlhooks import them from here.
from alpha_data.driver_errors import is_database_error as is_database_error
from alpha_data.driver_errors import sqlstate_of as sqlstate_of
from alpha_data.sqlstates import (
    CHECK_VIOLATION,
    CONNECTION_EXCEPTION_CLASSES,
    DATA_EXCEPTION_CLASS,
    EXCLUSION_VIOLATION,
    FOREIGN_KEY_VIOLATION,
    INTEGRITY_CONSTRAINT_VIOLATION,
    NOT_NULL_VIOLATION,
    QUERY_CANCELED,
    READ_ONLY_SQL_TRANSACTION,
    RESTRICT_VIOLATION,
    SERIALIZATION_FAILURE,
    UNIQUE_VIOLATION,
)
from alpha_data.sqlstates import RETRYABLE_SQLSTATES as RETRYABLE_SQLSTATES

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
    "translating",
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


_CONFLICT = frozenset({UNIQUE_VIOLATION, FOREIGN_KEY_VIOLATION, EXCLUSION_VIOLATION})
_INVALID = frozenset(
    {CHECK_VIOLATION, NOT_NULL_VIOLATION, INTEGRITY_CONSTRAINT_VIOLATION, RESTRICT_VIOLATION}
)
# Human messages for the constraints of our own schema.
_CONSTRAINT_MESSAGES: dict[str, str] = {
    names.USERS_USERNAME_UNIQUE: "username {value} is already taken",
    names.USERS_EMAIL_UNIQUE: "email {value} is already registered",
    names.API_KEYS_PREFIX_UNIQUE: "API key prefix collision; mint the key again",
    names.POSITIONS_SYMBOL_UNIQUE: "portfolio already holds a position in {value}",
    names.TRADES_EXTERNAL_ID_UNIQUE: "a trade with external id {value} already exists",
}


def is_retryable(exc: BaseException) -> bool:
    """True for errors that re-running the whole transaction can cure."""
    if isinstance(exc, TransientError):
        return (
            exc.retryable
            and not exc.outcome_unknown
            and not isinstance(exc, DatabaseUnavailableError)
        )
    return False


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
    pg = postgres_error(exc)
    if pg is not None:
        return _from_sqlstate(str(pg.sqlstate), pg, exc)
    if is_data_error(exc):
        return InvalidDataError(f"invalid value for a query parameter: {first_line(exc)}")
    if any(isinstance(c, TIMEOUTS) for c in cause_chain(exc, implicit=False)):
        # asyncpg's command_timeout or connect timeout: no reply at all (a silent
        # network path); like statement_timeout, re-running at once will not cure it.
        return TransientError(
            "no reply from PostgreSQL in time (connect_timeout, or statement_timeout + margin): "
            "the network path or the server is silent; the connection was dropped",
            retryable=False,
        )
    if is_connection_loss(exc):
        return TransientError("database connection lost")
    return DataLayerError(f"unexpected database error: {type(exc).__name__}")


def _from_sqlstate(code: str, pg: Any, exc: BaseException) -> DataLayerError:
    """The typed error for a PostgreSQL error ``pg`` with SQLSTATE ``code``."""
    table, constraint, column, value = describe(pg)
    kw: dict[str, Any] = {
        "sqlstate": code,
        "table": table,
        "constraint": constraint,
        "column": column,
    }
    if code == FOREIGN_KEY_VIOLATION and writes_child(exc, table):
        return InvalidDataError(f"{table} refers to a row that does not exist ({constraint})", **kw)
    if code in _CONFLICT:
        return ConflictError(_conflict_message(code, table, constraint, column, value), **kw)
    if code in _INVALID or code.startswith(DATA_EXCEPTION_CLASS):
        message = _invalid_message(code, table, constraint, column)
        pg_message = str(getattr(pg, "message", None) or "").strip()
        if code.startswith(DATA_EXCEPTION_CLASS) and pg_message:
            message = f"{message}: {pg_message.splitlines()[0][:200]}"
        return InvalidDataError(message, **kw)
    return _from_other_sqlstate(code, kw)


def _from_other_sqlstate(code: str, kw: dict[str, Any]) -> DataLayerError:
    """Transient, read-only and unclassified SQLSTATEs."""
    if code in RETRYABLE_SQLSTATES:
        kind = "serialization failure" if code == SERIALIZATION_FAILURE else "deadlock detected"
        return TransientError(f"{kind}; the transaction can be retried", **kw)
    if code == QUERY_CANCELED:
        return TransientError(
            "statement cancelled: statement_timeout exceeded", retryable=False, **kw
        )
    if code.startswith(CONNECTION_EXCEPTION_CLASSES):
        return TransientError(f"database connection lost (SQLSTATE {code})", **kw)
    if code == READ_ONLY_SQL_TRANSACTION:
        return ReadOnlyError("cannot write in a read-only transaction", **kw)
    return DataLayerError(f"database error (SQLSTATE {code})", **kw)


def translating(*, only_database_errors: bool = False) -> _Translating:
    """Context manager: database errors raised inside leave as alpha_data errors.

    ``with translating(): ...`` (also around ``await`` in async code) lets
    DataLayerError and BaseExceptions such as ``CancelledError`` pass
    unchanged and raises ``translate(exc) from exc`` for any other exception.
    With ``only_database_errors=True`` exceptions that are not driver or
    SQLAlchemy errors (``is_database_error``) pass unchanged too.
    """
    return _Translating(only_database_errors)


class _Translating:
    """The context manager ``translating()`` returns (stateless apart from its flag)."""

    __slots__ = ("only_database_errors",)

    def __init__(self, only_database_errors: bool) -> None:
        self.only_database_errors = only_database_errors

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, DataLayerError):
            return
        if self.only_database_errors and not is_database_error(exc):
            return
        raise translate(exc) from exc


def _conflict_message(
    code: str, table: str | None, constraint: str | None, column: str | None, value: str | None
) -> str:
    shown = f"'{value}'" if value is not None and len(value) <= 200 else "(value)"
    if constraint in _CONSTRAINT_MESSAGES:
        return _CONSTRAINT_MESSAGES[constraint].format(value=shown)
    if code == UNIQUE_VIOLATION:
        return f"{column or 'value'} {shown} already exists in {table or 'the table'}"
    if code == FOREIGN_KEY_VIOLATION:
        return f"{table or 'row'} still refers to the row being deleted or changed ({constraint})"
    return f"conflicting row in {table or 'the table'} ({constraint})"


def _invalid_message(
    code: str, table: str | None, constraint: str | None, column: str | None
) -> str:
    if code == NOT_NULL_VIOLATION:
        return f"{table}.{column} must not be null"
    if code == CHECK_VIOLATION:
        return f"value violates check {constraint} on {table}"
    return f"invalid data (SQLSTATE {code}){f' in {table}.{column}' if column else ''}"
