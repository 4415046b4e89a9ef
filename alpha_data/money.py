"""The layer's own decimal context: money arithmetic never depends on the caller's.

``decimal`` arithmetic, ``abs()``, ``quantize`` and ``normalize`` round to the
*current* context, which belongs to the application (``getcontext().prec =
12`` anywhere in the process, or a ``localcontext`` around a call). Numeric(18,
8) values have at most 18 significant digits; a product of two has at most
36, so 60 digits make every sum, difference and product of stored values
exact, and a weighted average exact before it is quantized. Every Decimal
computation of the layer runs in ``MONEY`` (methods of the context, or inside
``money_context()``); an inexact or invalid result raises ``decimal``'s
signals only where ``MONEY`` traps them (never, for values that passed
``check_money``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)

__all__ = ["MONEY", "QUANTUM", "money_context"]

#: Exact for every sum/difference/product of Numeric(18, 8) values; banker's rounding.
MONEY = Context(
    prec=60,
    rounding=ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

#: Scale of the Numeric(18, 8) money and quantity columns.
QUANTUM = Decimal("0.00000001")


def money_context() -> AbstractContextManager[Context]:
    """``with money_context():`` runs the block's Decimal operators in a copy of ``MONEY``."""
    return localcontext(MONEY)
