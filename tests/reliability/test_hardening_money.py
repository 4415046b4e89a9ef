"""The caller's decimal context never changes a stored amount or raises a raw decimal error.

An application may lower ``decimal.getcontext().prec`` for its own reasons;
the issue's cases were prec 12 (a raw ``decimal.InvalidOperation``) and prec
16 (a sell of 0.00000001 from 100002467.37037034 stored …030). Each case
here runs record_trade under the hostile context and compares every stored
position with the exact result computed with Fractions.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest
from sqlalchemy import select

from alpha_data import Database
from alpha_data.errors import InvalidDataError
from alpha_data.models import Position
from alpha_data.services import create_portfolio, record_trade
from alpha_data.validation import check_money
from tests.reliability.tools import Tally

QUANTUM = Decimal("0.00000001")


def exact_entry(held: Decimal, held_price: Decimal, qty: Decimal, price: Decimal) -> Decimal:
    """The weighted entry price computed with Fractions, quantized half-even to 8 dp."""
    value = (Fraction(held) * Fraction(held_price) + Fraction(qty) * Fraction(price)) / (
        Fraction(held) + Fraction(qty)
    )
    with decimal.localcontext(decimal.Context(prec=80)):
        digits = Decimal(value.numerator) / Decimal(value.denominator)
        return digits.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


async def _position(db: Database, portfolio_id: int, symbol: str) -> Position | None:
    async with db.unit_of_work() as uow:
        stmt = select(Position).where(
            Position.portfolio_id == portfolio_id, Position.symbol == symbol
        )
        return (await uow.session.execute(stmt)).scalar_one_or_none()


@pytest.mark.parametrize("prec", [12, 16, 6])
@pytest.mark.parametrize("rounding", [decimal.ROUND_HALF_UP, decimal.ROUND_DOWN])
async def test_trades_are_exact_whatever_the_callers_context(
    db: Database, tally: Tally, prec: int, rounding: str
) -> None:
    portfolio = await create_portfolio(db, name=f"ctx-{prec}-{rounding}")
    steps = [
        ("buy", Decimal("100002467.37037034"), Decimal("1.23456789")),
        ("sell", Decimal("0.00000001"), Decimal("2")),
        ("buy", Decimal("3.33333333"), Decimal("9876543.21098765")),
        ("buy", Decimal("0.00000007"), Decimal("0.00000003")),
        ("sell", Decimal("100002470.70370365"), Decimal("1")),  # leaves 0.00000008
    ]
    held, entry = Decimal(0), Decimal(0)
    with decimal.localcontext() as caller:
        caller.prec = prec
        caller.rounding = rounding
        caller.traps[decimal.Inexact] = True  # the harshest caller: any rounding raises
        for side, qty, price in steps:
            await record_trade(
                db, portfolio_id=portfolio.id, symbol="SYM", side=side, quantity=qty, price=price
            )
            with decimal.localcontext(decimal.Context(prec=80)):
                if side == "buy":
                    entry = exact_entry(held, entry, qty, price) if held else price
                    held = held + qty
                else:
                    held = held - qty
            tally.case("decimal-context-trade")
        # still the caller's context after the calls
        assert decimal.getcontext().prec == prec
    position = await _position(db, portfolio.id, "SYM")
    assert position is not None
    assert position.quantity == held == Decimal("0.00000008")
    assert position.entry_price == entry
    tally.rows_verified("decimal-context-position", 1)


async def test_the_issues_sell_under_prec_16_stores_the_exact_remainder(db: Database) -> None:
    portfolio = await create_portfolio(db, name="prec16")
    with decimal.localcontext() as caller:
        caller.prec = 16
        for side, qty in (("buy", "100002467.37037034"), ("sell", "0.00000001")):
            await record_trade(
                db,
                portfolio_id=portfolio.id,
                symbol="X",
                side=side,
                quantity=Decimal(qty),
                price=Decimal("10"),
            )
    position = await _position(db, portfolio.id, "X")
    assert position is not None and position.quantity == Decimal("100002467.37037033")


@pytest.mark.parametrize("prec", [1, 12, 16])
def test_money_checks_never_raise_raw_decimal_errors(prec: int) -> None:
    with decimal.localcontext() as caller:
        caller.prec = prec
        caller.traps[decimal.Inexact] = True
        assert check_money(Decimal("9999999999.99999999"), "q") == Decimal("9999999999.99999999")
        assert check_money("0.00000001", "q", positive=True) == QUANTUM
        with pytest.raises(InvalidDataError):
            check_money(Decimal("1.000000001"), "q")
        with pytest.raises(InvalidDataError):
            check_money(Decimal("10000000000"), "q")
