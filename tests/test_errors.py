"""SQLSTATE → typed error, one real violation per row of the table in DESIGN.md."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from alpha_data.errors import (
    ConflictError,
    DataLayerError,
    InvalidDataError,
    TransientError,
)
from alpha_data.testing.factories import PortfolioFactory, PositionFactory
from alpha_data.uow import UnitOfWork


async def _raises(db, sql: str, error: type[DataLayerError], sqlstate: str, params=None):
    with pytest.raises(error) as info:
        async with db.unit_of_work() as uow:
            await uow.session.execute(text(sql), params or {})
    assert info.value.sqlstate == sqlstate, info.value
    return info.value


async def test_unique_violation_23505_names_constraint_and_value(db):
    async with db.unit_of_work() as uow:
        p = await uow.portfolios.add(PortfolioFactory.build())
        await uow.portfolios.add_position(PositionFactory.build(portfolio_id=p.id, symbol="IBM"))
        await uow.commit()
    with pytest.raises(ConflictError) as info:
        async with db.unit_of_work() as uow:
            await uow.portfolios.add_position(
                PositionFactory.build(portfolio_id=p.id, symbol="IBM")
            )
    err = info.value
    assert err.sqlstate == "23505" and err.table == "positions"
    assert err.constraint == "uq_positions_portfolio_id_symbol"
    assert "IBM" in err.message and "already holds" in err.message
    assert err.status_code == 409


_MISSING_PARENT = [
    pytest.param(
        "INSERT INTO positions (portfolio_id, symbol, quantity, entry_price, version) "
        "VALUES (999999999, 'X', 1, 1, 1)",
        id="insert-child",
    ),
    pytest.param(
        'INSERT INTO "public"."positions" (portfolio_id, symbol, quantity, entry_price, '
        "version) VALUES (999999999, 'X', 1, 1, 1)",
        id="insert-child-schema-qualified",
    ),
    pytest.param(
        "UPDATE positions SET portfolio_id = 999999999 WHERE portfolio_id = :p",
        id="update-child",
    ),
]


async def _portfolio_with_position(db) -> int:
    async with db.unit_of_work() as uow:
        p = await uow.portfolios.add(PortfolioFactory.build())
        await uow.portfolios.add_position(PositionFactory.build(portfolio_id=p.id, symbol="IBM"))
        await uow.commit()
    return p.id


@pytest.mark.parametrize("sql", _MISSING_PARENT)
async def test_foreign_key_23503_from_the_child_is_invalid_data(db, sql):
    """A row that refers to a missing parent is bad input (422), not a conflict."""
    p = await _portfolio_with_position(db)
    err = await _raises(db, sql, InvalidDataError, "23503", {"p": p})
    assert err.constraint == "fk_positions_portfolio_id_portfolios"
    assert err.table == "positions" and err.status_code == 422


async def test_foreign_key_23503_through_the_orm_is_invalid_data(db):
    with pytest.raises(InvalidDataError) as info:
        async with db.unit_of_work() as uow:
            await uow.portfolios.add_position(PositionFactory.build(portfolio_id=999_999_999))
    assert info.value.sqlstate == "23503" and info.value.status_code == 422


async def test_rekeying_a_referenced_parent_23503_is_a_conflict(db):
    """Changing the key of a row that children still refer to is a 409."""
    p = await _portfolio_with_position(db)
    err = await _raises(
        db,
        "UPDATE portfolios SET id = id + 1000000000 WHERE id = :p",
        ConflictError,
        "23503",
        {"p": p},
    )
    assert err.constraint == "fk_positions_portfolio_id_portfolios" and err.status_code == 409


async def test_deleting_a_referenced_parent_23503_is_a_conflict(db):
    # A plain table (temporary ones cannot reference portfolios), created inside the
    # test's outer transaction, which the db fixture rolls back.
    async with db.unit_of_work() as uow:
        p = await uow.portfolios.add(PortfolioFactory.build())
        await uow.session.execute(
            text(
                "CREATE TABLE notes (portfolio_id bigint NOT NULL "
                "CONSTRAINT fk_notes_portfolio_id_portfolios REFERENCES portfolios (id))"
            )
        )
        await uow.session.execute(text("INSERT INTO notes VALUES (:p)"), {"p": p.id})
        await uow.commit()
    err = await _raises(
        db, "DELETE FROM portfolios WHERE id = :p", ConflictError, "23503", {"p": p.id}
    )
    assert err.constraint == "fk_notes_portfolio_id_portfolios" and err.table == "notes"
    assert "still refers" in err.message


async def test_exclusion_violation_23P01(db):
    async with db.unit_of_work() as uow:
        await uow.session.execute(
            text("CREATE TEMP TABLE bookings (slot int4range, EXCLUDE USING gist (slot WITH &&))")
        )
        await uow.session.execute(text("INSERT INTO bookings VALUES ('[1,5)')"))
        await uow.commit()
    await _raises(db, "INSERT INTO bookings VALUES ('[3,8)')", ConflictError, "23P01")


async def test_check_violation_23514(db):
    async with db.unit_of_work() as uow:
        p = await uow.portfolios.add(PortfolioFactory.build())
        await uow.commit()
    err = await _raises(
        db,
        "INSERT INTO positions (portfolio_id, symbol, quantity, entry_price, version) "
        "VALUES (:p, 'X', -1, 1, 1)",
        InvalidDataError,
        "23514",
        {"p": p.id},
    )
    assert err.constraint == "ck_positions_quantity_positive" and err.status_code == 422


async def test_not_null_violation_23502(db):
    err = await _raises(
        db, "INSERT INTO portfolios (name, version) VALUES (NULL, 1)", InvalidDataError, "23502"
    )
    assert err.column == "name" and "must not be null" in err.message


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("SELECT 1 / 0", "22012"),  # division_by_zero
        ("SELECT 'abc'::int", "22P02"),  # invalid_text_representation
        ("SELECT 12345678901::numeric(18,8)::numeric(5,2)", "22003"),  # numeric out of range
        ("INSERT INTO portfolios (name, version) VALUES (repeat('x', 300), 1)", "22001"),
    ],
)
async def test_data_exceptions_22xxx(db, sql, sqlstate):
    err = await _raises(db, sql, InvalidDataError, sqlstate)
    assert err.message and "SQLSTATE" in err.message


async def test_serialization_failure_40001_and_deadlock_40P01_are_transient(db):
    for code in ("40001", "40P01"):
        err = await _raises(
            db,
            f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$",
            TransientError,
            code,
        )
        assert err.retryable and err.status_code == 503


async def test_a_real_deadlock_is_retried_by_run(real_db):
    async with real_db.unit_of_work() as uow:
        a = await uow.portfolios.add(PortfolioFactory.build(name="a"))
        b = await uow.portfolios.add(PortfolioFactory.build(name="b"))
        await uow.commit()
    attempts = {"ab": 0, "ba": 0}
    both = asyncio.Event()
    locked = 0

    def worker(order: str, first: int, second: int):
        async def fn(uow: UnitOfWork) -> None:
            nonlocal locked
            attempts[order] += 1
            stmt = text("UPDATE portfolios SET description = :d WHERE id = :id")
            await uow.session.execute(stmt, {"d": order, "id": first})
            if attempts[order] == 1:
                locked += 1
                if locked == 2:
                    both.set()
                await asyncio.wait_for(both.wait(), 5)
            await uow.session.execute(stmt, {"d": order, "id": second})

        return fn

    await asyncio.gather(
        real_db.run(worker("ab", a.id, b.id)), real_db.run(worker("ba", b.id, a.id))
    )
    assert sorted(attempts.values()) == [1, 2]  # PostgreSQL broke the deadlock; one re-ran


async def test_statement_timeout_57014_is_transient_not_retryable(settings):
    from alpha_data import Database

    db = Database(settings.model_copy(update={"statement_timeout": 0.1}))
    try:
        with pytest.raises(TransientError) as info:
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("SELECT pg_sleep(1)"))
        assert info.value.sqlstate == "57014" and not info.value.retryable
    finally:
        await db.close()
