"""Portfolios: the aggregate root of positions and trades."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, String, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from alpha_data.cache import TagSpec, cached, invalidates
from alpha_data.errors import InvalidDataError, translating
from alpha_data.models import Portfolio, Position, Trade
from alpha_data.repositories.base import Repository, check_id
from alpha_data.repositories.pagination import Page
from alpha_data.repositories.rowload import fetch_with_children, holds_any, row_loader
from alpha_data.validation import check_aware, check_money, check_symbol

__all__ = ["PORTFOLIO_ID", "PortfolioRepository"]

_HELD: Any = object()  # the session already holds an object of the read

# Cached reads of portfolios (rows → tags: alpha_data.repositories.rules).
PORTFOLIO_ID = TagSpec("portfolios", "id")


# Built once: SQLAlchemy memoizes a statement object's cache key, so a reused
# construct skips that work on each execution (record_trade's hot path).
_POSITION = select(Position).where(
    Position.portfolio_id == bindparam("portfolio_id"), Position.symbol == bindparam("symbol")
)
_POSITION_FOR_UPDATE = _POSITION.with_for_update().execution_options(populate_existing=True)
_POSITIONS = (
    select(Position)
    .where(Position.portfolio_id == bindparam("portfolio_id"))
    .order_by(Position.symbol)
)
_TRADE_BY_EXTERNAL_ID = select(Trade).where(Trade.external_id == bindparam("external_id"))


class _TradePages(Repository[Trade]):
    """Keyset paging of trades by ``executed_at`` (used by PortfolioRepository)."""

    model = Trade
    orderable = frozenset({"executed_at", "-executed_at", "id"})


class PortfolioRepository(Repository[Portfolio]):
    """Portfolios with their positions and trades; positions and trades are reached here."""

    model = Portfolio
    orderable = frozenset({"id", "created_at", "updated_at", "name"})

    @cached(PORTFOLIO_ID)
    async def get(self, id: int, *, cached: bool = True) -> Portfolio | None:
        """The portfolio with primary key ``id``, or None (cached)."""
        return await super().get(id)

    @cached(PORTFOLIO_ID, load=("positions",))
    async def get_with_positions(self, id: int, *, cached: bool = True) -> Portfolio | None:
        """The portfolio with its positions loaded, or None (cached).

        Read-only units of work: one LEFT JOIN statement (one snapshot);
        otherwise the ORM's two (the portfolio, then ``selectinload``).
        """
        check_id(id)
        if self.read_only:
            loaded = await self._fast_with_positions(id)
            if loaded is not _HELD:
                fast: Portfolio | None = loaded
                return fast
        stmt = (
            select(Portfolio)
            .where(Portfolio.id == id)
            .options(selectinload(Portfolio.positions))
            .execution_options(populate_existing=True)
        )
        portfolio: Portfolio | None = (await self._execute(stmt)).scalar_one_or_none()
        return portfolio

    async def _fast_with_positions(self, id: int) -> Any:
        """Read-only path: one LEFT JOIN, rows written straight into objects.

        Returns ``_HELD`` when the session already holds one of the objects
        (the ORM path then refreshes them in place).
        """
        portfolios, positions = row_loader(Portfolio), row_loader(Position)
        sync = self.session.sync_session
        with translating():
            row, children = await fetch_with_children(
                self.session, portfolios, positions, "portfolio_id", id, order_by="symbol"
            )
        if row is None:
            return None
        if holds_any(sync, portfolios, [row]) or holds_any(sync, positions, children):
            return _HELD
        portfolio = portfolios.build(sync, row)
        # Loaded, as a selectinload would leave it: no SQL, no history.
        set_committed_value(
            portfolio, "positions", [positions.build(sync, row) for row in children]
        )
        return portfolio

    async def get_position(
        self, portfolio_id: int, symbol: str, *, for_update: bool = False
    ) -> Position | None:
        """The position in ``symbol``; ``for_update`` takes a row lock until commit."""
        check_id(portfolio_id, "portfolio_id")
        symbol = check_symbol(symbol)
        stmt = _POSITION_FOR_UPDATE if for_update else _POSITION
        params = {"portfolio_id": portfolio_id, "symbol": symbol}
        position: Position | None = (await self._execute(stmt, params)).scalar_one_or_none()
        return position

    async def list_positions(self, portfolio_id: int) -> list[Position]:
        """All positions of a portfolio, by symbol."""
        check_id(portfolio_id, "portfolio_id")
        result = await self._execute(_POSITIONS, {"portfolio_id": portfolio_id})
        return list(result.scalars().all())

    async def add_position(self, position: Position) -> Position:
        """Insert a position (unique per portfolio and symbol)."""
        if not isinstance(position, Position):
            raise InvalidDataError("add_position takes a Position")
        self.session.add(position)
        await self._flush()
        return position

    async def delete_position(self, position: Position) -> None:
        """Delete a position (a position sold down to zero)."""
        await self.session.delete(position)
        await self._flush()

    async def add_trade(self, trade: Trade) -> Trade:
        """Insert a trade (``external_id`` is unique where given)."""
        if not isinstance(trade, Trade):
            raise InvalidDataError("add_trade takes a Trade")
        (added,) = await self.add_trades([trade])  # the Core INSERT … RETURNING path
        return added

    async def add_trades(self, trades: list[Trade]) -> list[Trade]:
        """Insert many trades in batched INSERT … RETURNING statements."""
        return await _TradePages(self.session).add_many(trades)

    async def count_trades(self, portfolio_id: int) -> int:
        """How many trades a portfolio has."""
        return await _TradePages(self.session).count(portfolio_id=check_id(portfolio_id))

    async def list_trades(
        self,
        portfolio_id: int,
        *,
        since: datetime | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Page[Trade]:
        """Trades of a portfolio, newest first, keyset-paged by (executed_at, id)."""
        check_id(portfolio_id, "portfolio_id")
        stmt = select(Trade).where(Trade.portfolio_id == portfolio_id)
        if since is not None:
            stmt = stmt.where(Trade.executed_at >= check_aware(since, "since"))
        return await _TradePages(self.session)._page(
            stmt, limit=limit, after=after, order_by="-executed_at"
        )

    async def get_trade_by_external_id(self, external_id: str) -> Trade | None:
        """The trade with this external id, or None."""
        if not isinstance(external_id, str) or not external_id or len(external_id) > 128:
            raise InvalidDataError("external_id must be a string of 1 to 128 characters")
        result = await self._execute(_TRADE_BY_EXTERNAL_ID, {"external_id": external_id})
        trade: Trade | None = result.scalar_one_or_none()
        return trade

    async def upsert_prices(self, portfolio_id: int, prices: Mapping[str, Decimal]) -> int:
        """Set ``current_price`` of the held symbols in one UPDATE … FROM unnest(...).

        Symbols the portfolio does not hold are ignored; returns how many
        positions changed. Each changed position's version is bumped.
        """
        check_id(portfolio_id, "portfolio_id")
        if not isinstance(prices, Mapping):
            raise InvalidDataError("prices must be a mapping of symbol to Decimal")
        symbols = [check_symbol(s) for s in prices]
        values = [check_money(p, f"price of {s}", positive=True) for s, p in prices.items()]
        if not symbols:
            return 0
        incoming = (
            select(
                func.unnest(bindparam("symbols", type_=ARRAY(String))).label("symbol"),
                func.unnest(bindparam("prices", type_=ARRAY(Numeric(18, 8)))).label("price"),
            )
        ).subquery("incoming")
        stmt = invalidates(
            update(Position)
            .where(
                Position.portfolio_id == portfolio_id,
                Position.symbol == incoming.c.symbol,
            )
            .values(current_price=incoming.c.price, version=Position.version + 1)
            .execution_options(synchronize_session=False),
            Position,
            portfolio_id=portfolio_id,
        )
        result: Any = await self._execute(stmt, {"symbols": symbols, "prices": values})
        self._expire_positions(portfolio_id)
        return int(result.rowcount)

    def _expire_positions(self, portfolio_id: int) -> None:
        """Positions changed behind the identity map: make loaded ones reload."""
        for obj in list(self.session.identity_map.values()):
            if isinstance(obj, Position) and obj.portfolio_id == portfolio_id:
                self.session.expire(obj)
