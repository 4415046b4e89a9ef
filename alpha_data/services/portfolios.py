"""Portfolio services: create, and the two reads (always fresh, or through the cache)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator

from alpha_data.models import Portfolio
from alpha_data.repositories.base import check_id
from alpha_data.services._common import Input, validate
from alpha_data.validation import check_text

if TYPE_CHECKING:
    from alpha_data.database import Database
    from alpha_data.uow import UnitOfWork

__all__ = ["create_portfolio", "get_cached_portfolio", "get_portfolio_with_positions"]

MAX_DESCRIPTION = 10_000


def _description(value: Any) -> str | None:
    if value is None:
        return None
    return check_text(value, "description", max_length=MAX_DESCRIPTION, allow_empty=True)


class NewPortfolio(Input):
    """Validated input of :func:`create_portfolio`."""

    name: Annotated[str, BeforeValidator(lambda v: check_text(v, "name", max_length=200))]
    description: Annotated[str | None, BeforeValidator(_description)] = None


async def create_portfolio(db: Database, *, name: str, description: str | None = None) -> Portfolio:
    """Create an empty portfolio (name 1 to 200 characters)."""
    data = validate(NewPortfolio, name=name, description=description)

    async def insert(uow: UnitOfWork) -> Portfolio:
        return await uow.portfolios.add(Portfolio(name=data.name, description=data.description))

    return await db.run(insert)


async def get_portfolio_with_positions(db: Database, portfolio_id: int) -> Portfolio | None:
    """The portfolio with its positions, read from PostgreSQL (never the cache), or None."""
    check_id(portfolio_id, "portfolio_id")
    async with db.unit_of_work(read_only=True) as uow:
        return await uow.portfolios.get_with_positions(portfolio_id, cached=False)


async def get_cached_portfolio(db: Database, portfolio_id: int) -> Portfolio | None:
    """The portfolio with its positions through the cache-aside read, or None.

    Served from the cache when fresh; commits that change the portfolio or its
    positions invalidate the entry.
    """
    check_id(portfolio_id, "portfolio_id")
    async with db.unit_of_work(read_only=True) as uow:
        return await uow.portfolios.get_with_positions(portfolio_id)
