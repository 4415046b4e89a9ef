"""translate() and translating() without a server: fake driver errors carry the SQLSTATE.

The real violations (one per row of the error table) are in tests/test_errors.py;
these check the classification rules themselves, including the ones a server
cannot easily be made to produce (admin shutdown, a 23503 at COMMIT).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc

from alpha_data import errors, sqlstates
from alpha_data.driver_errors import statement_target
from alpha_data.errors import (
    ConflictError,
    DataLayerError,
    InvalidDataError,
    ReadOnlyError,
    TransientError,
    translate,
    translating,
)


class FakePgError(Exception):
    """Shaped like an asyncpg error: sqlstate plus the names PostgreSQL reports."""

    def __init__(self, sqlstate: str, **names: Any) -> None:
        super().__init__("server text, translated in other locales")
        self.sqlstate = sqlstate
        self.constraint_name = names.get("constraint")
        self.table_name = names.get("table")
        self.column_name = names.get("column")
        self.detail = names.get("detail")
        self.message = names.get("message", "")


def wrapped(pg: FakePgError, statement: str) -> sa_exc.DBAPIError:
    """What SQLAlchemy raises: a DBAPIError naming the statement, the driver error as cause."""
    error = sa_exc.DBAPIError(statement, {}, pg)
    error.__cause__ = pg
    return error


def test_translate_never_uses_message_text() -> None:
    pg = FakePgError(
        "23505",
        constraint="uq_users_username",
        table="users",
        detail="Key (username)=(ana) already exists.",
        message="this text says deadlock detected but the code decides",
    )
    err = translate(pg)
    assert isinstance(err, ConflictError)
    assert err.message == "username 'ana' is already taken"


@pytest.mark.parametrize(
    ("sqlstate", "error", "status"),
    [
        (sqlstates.UNIQUE_VIOLATION, ConflictError, 409),
        (sqlstates.EXCLUSION_VIOLATION, ConflictError, 409),
        (sqlstates.CHECK_VIOLATION, InvalidDataError, 422),
        (sqlstates.NOT_NULL_VIOLATION, InvalidDataError, 422),
        ("22012", InvalidDataError, 422),
        ("22P02", InvalidDataError, 422),
        (sqlstates.SERIALIZATION_FAILURE, TransientError, 503),
        (sqlstates.DEADLOCK_DETECTED, TransientError, 503),
        (sqlstates.QUERY_CANCELED, TransientError, 503),
        ("08006", TransientError, 503),
        ("57P01", TransientError, 503),
        (sqlstates.READ_ONLY_SQL_TRANSACTION, ReadOnlyError, 422),
        ("42883", DataLayerError, 500),
    ],
)
def test_each_sqlstate_maps_to_its_error(sqlstate: str, error: type, status: int) -> None:
    err = translate(FakePgError(sqlstate, table="t", constraint="c"))
    assert type(err) is error and err.status_code == status
    assert err.sqlstate == sqlstate and err.table == "t" and err.constraint == "c"


def test_statement_timeout_and_violations_are_not_retryable() -> None:
    retryable = {
        code
        for code in ("40001", "40P01", "57014", "08006", "57P01", "23505")
        if errors.is_retryable(translate(FakePgError(code)))
    }
    assert retryable == {"40001", "40P01", "08006", "57P01"}


_FK = {"constraint": "fk_positions_portfolio_id_portfolios", "table": "positions"}


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("INSERT INTO positions (portfolio_id) VALUES ($1)", InvalidDataError),
        ('insert into "public"."positions" (portfolio_id) VALUES ($1)', InvalidDataError),
        ("UPDATE positions SET portfolio_id=$1 WHERE positions.id = $2", InvalidDataError),
        ("UPDATE ONLY public.positions SET portfolio_id=$1", InvalidDataError),
        ("UPDATE portfolios SET id=$1 WHERE portfolios.id = $2", ConflictError),
        ("DELETE FROM portfolios WHERE portfolios.id = $1", ConflictError),
        ("DELETE FROM positions WHERE id = $1", ConflictError),  # a cascade below it
        ("INSERT INTO positions_archive SELECT * FROM positions", ConflictError),
        ("COMMIT", ConflictError),  # a deferred check: the statement names no table
    ],
)
def test_foreign_key_direction_comes_from_the_statement(statement: str, error: type) -> None:
    err = translate(wrapped(FakePgError("23503", **_FK), statement))
    assert type(err) is error and err.sqlstate == "23503"
    assert err.constraint == _FK["constraint"]


def test_foreign_key_without_a_statement_is_a_conflict() -> None:
    assert isinstance(translate(FakePgError("23503", **_FK)), ConflictError)


@pytest.mark.parametrize(
    ("statement", "target"),
    [
        ("INSERT INTO trades (x) VALUES (1)", ("INSERT", "trades")),
        ("  update\n alphapulse.metrics set value = 1", ("UPDATE", "metrics")),
        ('DELETE FROM "Odd Name" WHERE true', ("DELETE", "Odd Name")),
        ("SELECT 1", None),
        ("WITH x AS (SELECT 1) INSERT INTO trades SELECT * FROM x", None),
    ],
)
def test_statement_target(statement: str, target: tuple[str, str] | None) -> None:
    assert statement_target(statement) == target


def test_errors_without_sqlstate() -> None:
    assert isinstance(translate(orm_exc.StaleDataError("x")), ConflictError)
    pool = translate(sa_exc.TimeoutError("QueuePool limit"))
    assert isinstance(pool, TransientError) and not pool.retryable
    assert isinstance(translate(ConnectionResetError()), TransientError)
    assert type(translate(RuntimeError("?"))) is DataLayerError
    already = ConflictError("kept")
    assert translate(already) is already


def test_translating_raises_the_typed_error_from_the_original() -> None:
    pg = FakePgError("23505", table="users")
    with pytest.raises(ConflictError) as info, translating():
        raise pg
    assert info.value.__cause__ is pg


def test_translating_lets_typed_errors_and_cancellation_through() -> None:
    typed = InvalidDataError("bad")
    with pytest.raises(InvalidDataError) as info, translating():
        raise typed
    assert info.value is typed
    with pytest.raises(asyncio.CancelledError), translating():
        raise asyncio.CancelledError
    with translating():
        pass  # no exception: nothing happens


def test_translating_can_leave_non_database_errors_alone() -> None:
    with pytest.raises(KeyError), translating(only_database_errors=True):
        raise KeyError("a bug, not a database error")
    with pytest.raises(DataLayerError), translating():
        raise KeyError("translated like every other exception")


async def test_translating_works_around_await() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise FakePgError("40001")

    with pytest.raises(TransientError) as info, translating():
        await fails()
    assert info.value.retryable
