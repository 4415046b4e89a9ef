"""Reading a driver or SQLAlchemy exception: what it carries, never its message text.

Its cause chain, the asyncpg error in it and that error's SQLSTATE and
names, whether it means a lost connection, a client-side timeout or a
parameter the driver could not encode, and the statement that failed (for
the direction of a foreign-key violation). ``alpha_data.errors`` builds its
typed errors from these answers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc

__all__ = [
    "TIMEOUTS",
    "cause_chain",
    "describe",
    "failed_statement",
    "first_line",
    "is_connection_loss",
    "is_data_error",
    "is_database_error",
    "postgres_error",
    "sqlstate_of",
    "statement_target",
    "writes_child",
]

# A client-side timeout (asyncpg command_timeout/connect timeout); distinct before 3.11.
TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError)

_KEY_DETAIL = re.compile(r"Key \((?P<cols>.+?)\)=\((?P<vals>.*)\)")


def cause_chain(exc: BaseException, *, implicit: bool = True) -> Iterator[BaseException]:
    """``exc`` and its causes (with ``implicit``, also the exceptions it interrupted)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (current.__context__ if implicit else None)


def postgres_error(exc: BaseException) -> Any | None:
    """Find the asyncpg error (it carries sqlstate and names) in the cause chain."""
    for current in cause_chain(exc):
        if getattr(current, "sqlstate", None) and hasattr(current, "constraint_name"):
            return current
    orig = getattr(exc, "orig", None)
    if orig is not None and getattr(orig, "sqlstate", None):
        return orig
    return None


def is_connection_loss(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    for current in cause_chain(exc):
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
    kinds = (sa_exc.DBAPIError, sa_exc.TimeoutError, orm_exc.StaleDataError, OSError, *TIMEOUTS)
    if isinstance(exc, kinds) or type(exc).__module__.startswith("asyncpg"):
        return True
    return isinstance(exc, sa_exc.StatementError) and isinstance(
        exc.orig, (LookupError, ValueError, TypeError)
    )


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE carried by ``exc`` (or its cause), if any."""
    pg = postgres_error(exc)
    return str(pg.sqlstate) if pg is not None else None


def describe(pg: Any) -> tuple[str | None, str | None, str | None, str | None]:
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


def failed_statement(exc: BaseException) -> str | None:
    for current in cause_chain(exc):
        statement = getattr(current, "statement", None)
        if isinstance(statement, str):
            return statement
    return None


def writes_child(exc: BaseException, fk_table: str | None) -> bool:
    """True when a 23503 came from writing the referencing (child) row itself.

    PostgreSQL reports a foreign-key violation on the constraint's own table,
    the child. An INSERT/UPDATE of that table names a missing parent (bad
    input, 422); anything else (DELETE, re-keying the parent, a cascade, a
    deferred check at COMMIT) removed or moved a row that is still referenced
    (a conflict, 409).
    """
    statement = failed_statement(exc)
    target = statement_target(statement) if statement is not None else None
    if target is None or fk_table is None:
        return False
    kind, table = target
    return kind in ("INSERT", "UPDATE") and table == fk_table


def is_data_error(exc: BaseException) -> bool:
    """A driver-side DataError (a parameter asyncpg could not encode), no SQLSTATE."""
    if type(exc).__name__ == "DataError":
        return True
    return any(
        type(c).__name__ == "DataError" and type(c).__module__.startswith("asyncpg")
        for c in cause_chain(exc, implicit=False)
    )


def first_line(exc: BaseException) -> str:
    *_, current = cause_chain(exc, implicit=False)
    text = str(current).splitlines()[0] if str(current) else type(current).__name__
    return text[:200]
