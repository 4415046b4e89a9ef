"""The typed errors that callers catch, and the SQLSTATE → error translation.

Classification reads SQLSTATE codes (and exception types for connection
loss), never message text. Messages name the table/constraint/column but
never parameter values that could be secret.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc

from alpha_data import schema_names as names

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


# -- SQLSTATE codes (PostgreSQL appendix A) that alpha_data classifies --------
UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
EXCLUSION_VIOLATION = "23P01"
CHECK_VIOLATION = "23514"
NOT_NULL_VIOLATION = "23502"
INTEGRITY_CONSTRAINT_VIOLATION = "23000"
RESTRICT_VIOLATION = "23001"
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
QUERY_CANCELED = "57014"  # statement_timeout (and pg_cancel_backend)
READ_ONLY_SQL_TRANSACTION = "25006"
INVALID_CATALOG_NAME = "3D000"  # the database does not exist
INVALID_PASSWORD = "28P01"  # noqa: S105 - a SQLSTATE, not a password
INVALID_AUTHORIZATION_SPECIFICATION = "28000"
UNDEFINED_TABLE = "42P01"
#: Class prefixes: data exceptions; connection exceptions; admin shutdown/crash.
DATA_EXCEPTION_CLASS = "22"
CONNECTION_EXCEPTION_CLASSES = ("08", "57P")
#: A login the server refused (wrong password or no such role).
LOGIN_REJECTED = frozenset({INVALID_PASSWORD, INVALID_AUTHORIZATION_SPECIFICATION})

# SQLSTATEs that a retry can cure.
RETRYABLE_SQLSTATES = frozenset({SERIALIZATION_FAILURE, DEADLOCK_DETECTED})
_CONFLICT = frozenset({UNIQUE_VIOLATION, FOREIGN_KEY_VIOLATION, EXCLUSION_VIOLATION})
_INVALID = frozenset(
    {CHECK_VIOLATION, NOT_NULL_VIOLATION, INTEGRITY_CONSTRAINT_VIOLATION, RESTRICT_VIOLATION}
)
# A client-side timeout (asyncpg command_timeout/connect timeout); distinct before 3.11.
_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError)

_KEY_DETAIL = re.compile(r"Key \((?P<cols>.+?)\)=\((?P<vals>.*)\)")

# Human messages for the constraints of our own schema.
_CONSTRAINT_MESSAGES: dict[str, str] = {
    names.USERS_USERNAME_UNIQUE: "username {value} is already taken",
    names.USERS_EMAIL_UNIQUE: "email {value} is already registered",
    names.API_KEYS_PREFIX_UNIQUE: "API key prefix collision; mint the key again",
    names.POSITIONS_SYMBOL_UNIQUE: "portfolio already holds a position in {value}",
    names.TRADES_EXTERNAL_ID_UNIQUE: "a trade with external id {value} already exists",
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
    if pg is not None:
        return _from_sqlstate(str(pg.sqlstate), pg, exc)
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


def _from_sqlstate(code: str, pg: Any, exc: BaseException) -> DataLayerError:
    """The typed error for a PostgreSQL error ``pg`` with SQLSTATE ``code``."""
    table, constraint, column, value = _describe(pg)
    kw: dict[str, Any] = {
        "sqlstate": code,
        "table": table,
        "constraint": constraint,
        "column": column,
    }
    if code == FOREIGN_KEY_VIOLATION and _writes_child(exc, table):
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


# ``INSERT INTO [schema.]table`` / ``UPDATE [ONLY] [schema.]table``: the statement's
# kind and target, read from the SQL alpha_data (or the caller) sent, never from
# the server's (translatable) message.
_WRITE_TARGET = re.compile(
    r"^\s*(?P<kind>INSERT\s+INTO|UPDATE(?:\s+ONLY)?|DELETE\s+FROM)\s+"
    r'(?:(?:"[^"]+"|[\w$]+)\.)?(?P<table>"[^"]+"|[\w$]+)',
    re.IGNORECASE,
)


def statement_target(statement: str) -> tuple[str, str] | None:
    """``(kind, table)`` of an INSERT/UPDATE/DELETE statement (kind upper-case, one word)."""
    match = _WRITE_TARGET.match(statement)
    if match is None:
        return None
    kind = match.group("kind").split()[0].upper()
    return kind, match.group("table").strip('"')


def _failed_statement(exc: BaseException) -> str | None:
    for current in _chain(exc):
        statement = getattr(current, "statement", None)
        if isinstance(statement, str):
            return statement
    return None


def _writes_child(exc: BaseException, fk_table: str | None) -> bool:
    """True when a 23503 came from writing the referencing (child) row itself.

    PostgreSQL reports a foreign-key violation on the constraint's own table,
    the child. An INSERT/UPDATE of that table names a missing parent (bad
    input, 422); anything else (DELETE, re-keying the parent, a cascade, a
    deferred check at COMMIT) removed or moved a row that is still referenced
    (a conflict, 409).
    """
    statement = _failed_statement(exc)
    target = statement_target(statement) if statement is not None else None
    if target is None or fk_table is None:
        return False
    kind, table = target
    return kind in ("INSERT", "UPDATE") and table == fk_table


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
