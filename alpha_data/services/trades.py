"""Trade services: record a trade and move the position, in one transaction.

Position arithmetic
    * A buy adds its quantity; the entry price becomes the quantity-weighted
      average ``(q_held * p_held + q * p) / (q_held + q)``, computed with 60
      significant digits and quantized to 8 decimal places with ROUND_HALF_EVEN
      (banker's rounding, the column's scale). Fees do not enter the entry price.
    * A sell subtracts its quantity and leaves the entry price unchanged; a
      position sold down to exactly zero is deleted. Selling more than is held
      raises InvalidDataError and writes nothing.

Concurrency and idempotency
    * The position row is locked (``SELECT … FOR UPDATE``) before it is read,
      so concurrent trades on one position serialize and none is lost.
    * Two first buys of a symbol race on the unique (portfolio_id, symbol)
      index: the loser's transaction is re-run and then finds, and locks, the
      winner's row.
    * ``external_id`` makes a trade idempotent: a repeat returns the first
      trade and changes nothing, also when the two calls race (the unique
      violation on ``uq_trades_external_id`` is answered with the committed
      trade read in a fresh transaction). Reusing an external id for a
      different trade is a ConflictError.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator

from alpha_data import schema_names as names
from alpha_data.errors import ConflictError, InvalidDataError, NotFoundError
from alpha_data.events import PositionChanged, TradeExecuted
from alpha_data.models import OrderType, Position, Side, Trade
from alpha_data.money import MONEY, QUANTUM
from alpha_data.repositories.base import check_id
from alpha_data.services._common import Input, publish_after_commit, validate
from alpha_data.validation import check_money, check_symbol, check_text

if TYPE_CHECKING:
    from alpha_data.database import Database
    from alpha_data.uow import UnitOfWork

__all__ = ["record_trade", "weighted_entry_price"]

#: Every computation below uses the layer's context, never the caller's (see money.py).
_CALC = MONEY
_RACE_ATTEMPTS = 5
_PORTFOLIO_FKS = frozenset({names.TRADES_PORTFOLIO_FK, names.POSITIONS_PORTFOLIO_FK})


def weighted_entry_price(
    held_quantity: Decimal, held_price: Decimal, quantity: Decimal, price: Decimal
) -> Decimal:
    """Quantity-weighted average price after a buy, quantized to 8 dp (ROUND_HALF_EVEN)."""
    total = _CALC.add(held_quantity, quantity)
    cost = _CALC.add(_CALC.multiply(held_quantity, held_price), _CALC.multiply(quantity, price))
    return _CALC.divide(cost, total).quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=_CALC)


def _enum(kind: type[Side] | type[OrderType], what: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(m.value for m in kind)
            raise InvalidDataError(f"{what} must be one of {allowed}") from None

    return BeforeValidator(check)


def _external_id(value: Any) -> str | None:
    if value is None:
        return None
    text = check_text(value, "external_id", max_length=128)
    if not text.isprintable():
        raise InvalidDataError("external_id must not contain control characters")
    return text


class NewTrade(Input):
    """Validated input of :func:`record_trade`."""

    portfolio_id: Annotated[int, BeforeValidator(lambda v: check_id(v, "portfolio_id"))]
    symbol: Annotated[str, BeforeValidator(check_symbol)]
    side: Annotated[Side, _enum(Side, "side")]
    quantity: Annotated[
        Decimal, BeforeValidator(lambda v: check_money(v, "quantity", positive=True))
    ]
    price: Annotated[Decimal, BeforeValidator(lambda v: check_money(v, "price", positive=True))]
    fees: Annotated[Decimal, BeforeValidator(lambda v: check_money(v, "fees"))]
    order_type: Annotated[OrderType, _enum(OrderType, "order_type")]
    external_id: Annotated[str | None, BeforeValidator(_external_id)] = None


async def record_trade(
    db: Database,
    *,
    portfolio_id: int,
    symbol: str,
    side: Side | str,
    quantity: Decimal,
    price: Decimal,
    fees: Decimal = Decimal("0"),
    order_type: OrderType | str = "market",
    external_id: str | None = None,
) -> Trade:
    """Insert a trade and update its position in one transaction; returns the trade.

    Retries transient failures (serialization, deadlock, lost connection) via
    ``db.run``. Publishes ``TradeExecuted`` and ``PositionChanged`` after the
    commit. NotFoundError for an unknown portfolio; InvalidDataError for bad
    input or an oversell; ConflictError when ``external_id`` belongs to a
    different trade.
    """
    data = validate(
        NewTrade,
        portfolio_id=portfolio_id,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=price,
        fees=fees,
        order_type=order_type,
        external_id=external_id,
    )
    for attempt in range(1, _RACE_ATTEMPTS + 1):
        try:
            return await db.run(partial(_apply, db, data))
        except ConflictError as exc:
            if exc.constraint == names.TRADES_EXTERNAL_ID_UNIQUE and data.external_id is not None:
                return await _existing_trade(db, data, exc)
            if exc.constraint == names.POSITIONS_SYMBOL_UNIQUE and attempt < _RACE_ATTEMPTS:
                continue  # lost the race to open the position: re-run and lock it
            raise
        except InvalidDataError as exc:
            if exc.constraint in _PORTFOLIO_FKS:  # the portfolio was deleted meanwhile
                raise NotFoundError(
                    f"Portfolio {data.portfolio_id} not found", table="portfolios"
                ) from None
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _same_trade(trade: Trade, data: NewTrade) -> bool:
    return (
        trade.portfolio_id == data.portfolio_id
        and trade.symbol == data.symbol
        and trade.side == data.side
        and trade.quantity == data.quantity
        and trade.price == data.price
        and trade.fees == data.fees
        and trade.order_type == data.order_type
    )


def _reused(data: NewTrade) -> ConflictError:
    return ConflictError(
        f"external id {data.external_id!r} was already used for a different trade",
        table="trades",
        constraint=names.TRADES_EXTERNAL_ID_UNIQUE,
        column="external_id",
    )


async def _existing_trade(db: Database, data: NewTrade, error: ConflictError) -> Trade:
    """The committed trade with ``data.external_id`` (after losing an idempotency race)."""
    assert data.external_id is not None
    async with db.unit_of_work(read_only=True) as uow:
        trade = await uow.portfolios.get_trade_by_external_id(data.external_id)
    if trade is None:  # the winner was deleted since (its portfolio removed)
        raise error
    if not _same_trade(trade, data):
        raise _reused(data) from None
    return trade


async def _apply(db: Database, data: NewTrade, uow: UnitOfWork) -> Trade:
    """The transaction of :func:`record_trade` (re-run whole on transient errors)."""
    portfolios = uow.portfolios
    if data.external_id is not None:
        existing = await portfolios.get_trade_by_external_id(data.external_id)
        if existing is not None:
            if not _same_trade(existing, data):
                raise _reused(data)
            return existing

    # The trade goes in before the position is locked: the row lock is then held
    # for one round trip less, and a racing duplicate external_id surfaces as a
    # unique violation (not as a misleading oversell). An oversell found below
    # rolls the insert back with everything else.
    trade = await portfolios.add_trade(_new_trade(data))
    position = await portfolios.get_position(data.portfolio_id, data.symbol, for_update=True)

    if data.side is Side.BUY:
        remaining, entry = await _buy(uow, data, position)
    else:
        remaining, entry = await _sell(uow, data, position)
    await _publish(db, uow, trade, data, remaining, entry)
    return trade


def _new_trade(data: NewTrade) -> Trade:
    """The Trade row ``data`` describes."""
    return Trade(
        portfolio_id=data.portfolio_id,
        symbol=data.symbol,
        side=data.side,
        quantity=data.quantity,
        price=data.price,
        fees=data.fees,
        order_type=data.order_type,
        external_id=data.external_id,
    )


async def _buy(
    uow: UnitOfWork, data: NewTrade, position: Position | None
) -> tuple[Decimal, Decimal | None]:
    """Open or grow the (locked) position; its new quantity and entry price."""
    if position is None:
        position = await uow.portfolios.add_position(
            Position(
                portfolio_id=data.portfolio_id,
                symbol=data.symbol,
                quantity=data.quantity,
                entry_price=data.price,
            )
        )
    else:
        total = check_money(
            _CALC.add(position.quantity, data.quantity),
            "resulting position quantity",
            positive=True,
        )
        position.entry_price = weighted_entry_price(
            position.quantity, position.entry_price, data.quantity, data.price
        )
        position.quantity = total
        await uow.flush()
    return position.quantity, position.entry_price


async def _sell(
    uow: UnitOfWork, data: NewTrade, position: Position | None
) -> tuple[Decimal, Decimal | None]:
    """Shrink the (locked) position, deleting it at zero; InvalidDataError on an oversell.

    Returns the remaining quantity and entry price (None once deleted).
    """
    held = position.quantity if position is not None else Decimal(0)
    if position is None or data.quantity > held:
        raise InvalidDataError(
            f"cannot sell {data.quantity} {data.symbol}: the portfolio holds {held}",
            table="positions",
            column="quantity",
        )
    remaining = _CALC.subtract(held, data.quantity)
    if remaining == 0:
        await uow.portfolios.delete_position(position)
        return remaining, None
    position.quantity = remaining
    await uow.flush()
    return remaining, position.entry_price


async def _publish(
    db: Database,
    uow: UnitOfWork,
    trade: Trade,
    data: NewTrade,
    remaining: Decimal,
    entry: Decimal | None,
) -> None:
    """Queue TradeExecuted and PositionChanged for after the commit."""
    await publish_after_commit(
        uow,
        db,
        TradeExecuted(
            trade_id=trade.id,
            portfolio_id=trade.portfolio_id,
            symbol=trade.symbol,
            side=trade.side.value,
            quantity=trade.quantity,
            price=trade.price,
            executed_at=trade.executed_at,
        ),
    )
    await publish_after_commit(
        uow,
        db,
        PositionChanged(
            portfolio_id=data.portfolio_id,
            symbol=data.symbol,
            quantity=remaining,
            entry_price=entry,
        ),
    )
