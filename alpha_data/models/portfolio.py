"""The portfolio aggregate: Portfolio (root), its Positions and Trades."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from alpha_data.models.base import Base, StrEnum, TimestampedIdMixin, enum_column

__all__ = ["OrderType", "Portfolio", "Position", "Side", "Trade", "TradeStatus"]


class Side(StrEnum):
    """Direction of a trade."""

    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    """How a trade was ordered."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TradeStatus(StrEnum):
    """Lifecycle state of a trade."""

    PENDING = "pending"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Portfolio(TimestampedIdMixin, Base):
    """A book of positions; the aggregate root for positions and trades."""

    __tablename__ = "portfolios"

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    positions: Mapped[list[Position]] = relationship(
        back_populates="portfolio",
        lazy="raise_on_sql",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Position.symbol",
    )
    trades: Mapped[list[Trade]] = relationship(
        back_populates="portfolio",
        lazy="raise_on_sql",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Trade.id",
    )

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}


class Position(TimestampedIdMixin, Base):
    """Holding of one symbol in one portfolio; quantity is always > 0."""

    __tablename__ = "positions"

    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    symbol: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[Decimal]
    entry_price: Mapped[Decimal]
    current_price: Mapped[Decimal | None] = mapped_column(default=None)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    portfolio: Mapped[Portfolio] = relationship(back_populates="positions", lazy="raise_on_sql")

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}
    __table_args__ = (
        Index("uq_positions_portfolio_id_symbol", "portfolio_id", "symbol", unique=True),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("entry_price > 0", name="entry_price_positive"),
        CheckConstraint("current_price > 0", name="current_price_positive"),
    )


class Trade(TimestampedIdMixin, Base):
    """An executed (or pending) order; immutable history of the portfolio."""

    __tablename__ = "trades"
    __mapper_args__ = {"eager_defaults": True}

    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[Side] = mapped_column(enum_column(Side, "side"))
    quantity: Mapped[Decimal]
    price: Mapped[Decimal]
    fees: Mapped[Decimal] = mapped_column(default=Decimal("0"), server_default=text("0"))
    order_type: Mapped[OrderType] = mapped_column(
        enum_column(OrderType, "order_type"),
        default=OrderType.MARKET,
        server_default=OrderType.MARKET.value,
    )
    status: Mapped[TradeStatus] = mapped_column(
        enum_column(TradeStatus, "status"),
        default=TradeStatus.FILLED,
        server_default=TradeStatus.FILLED.value,
    )
    executed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    external_id: Mapped[str | None] = mapped_column(String(128), default=None)

    portfolio: Mapped[Portfolio] = relationship(back_populates="trades", lazy="raise_on_sql")

    __table_args__ = (
        Index(
            "uq_trades_external_id",
            "external_id",
            unique=True,
            postgresql_where=text("external_id IS NOT NULL"),
        ),
        Index("ix_trades_portfolio_id_executed_at", "portfolio_id", "executed_at", "id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint("fees >= 0", name="fees_non_negative"),
    )
