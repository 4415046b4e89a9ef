"""WatchlistRepository: a user's watchlists, read through the cache."""

from __future__ import annotations

from collections.abc import Iterable

from alpha_data.cache import TagSpec, cached, invalidated_by
from alpha_data.errors import InvalidDataError
from alpha_data.repositories import Repository
from alpha_data.repositories.base import check_id
from alpha_data.validation import check_symbol, check_text
from sqlalchemy import select

from watchlists.models import MAX_NAME_LENGTH, MAX_SYMBOLS, Watchlist

__all__ = ["WATCHLIST_OWNER", "WatchlistRepository", "register_rules"]

#: Cached reads keyed by the owner; a written watchlist row dirties its owner's tag.
WATCHLIST_OWNER = TagSpec("watchlists", "user_id")


def register_rules() -> None:
    """Declare which cached reads a written Watchlist dirties (idempotent; ``make_database``).

    Rows PostgreSQL deletes with their user (ON DELETE CASCADE) need nothing
    here: alpha_data derives those invalidations from the foreign key.
    """
    invalidated_by(Watchlist, WATCHLIST_OWNER)


def _symbols(values: Iterable[str]) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise InvalidDataError("symbols must be a list of symbols")
    symbols = [check_symbol(value) for value in values]
    if len(symbols) > MAX_SYMBOLS:
        raise InvalidDataError(f"a watchlist holds at most {MAX_SYMBOLS} symbols")
    return list(dict.fromkeys(symbols))


class WatchlistRepository(Repository[Watchlist]):
    """Watchlists by owner; writes validate before SQL."""

    model = Watchlist

    @cached(WATCHLIST_OWNER, many=True)
    async def for_user(self, user_id: int, *, cached: bool = True) -> list[Watchlist]:
        """The user's watchlists by id (cached; invalidated after commits that change them)."""
        check_id(user_id, "user_id")
        stmt = select(Watchlist).where(Watchlist.user_id == user_id).order_by(Watchlist.id)
        return list((await self._execute(stmt)).scalars())

    async def create(self, user_id: int, name: str, symbols: Iterable[str] = ()) -> Watchlist:
        """A new watchlist (InvalidDataError for bad input or a missing user)."""
        watchlist = Watchlist(
            user_id=check_id(user_id, "user_id"),
            name=check_text(name, "name", max_length=MAX_NAME_LENGTH),
            symbols=_symbols(symbols),
        )
        return await self.add(watchlist)

    async def add_symbol(self, watchlist_id: int, symbol: str) -> Watchlist:
        """Append ``symbol`` (kept once); NotFoundError for a missing watchlist."""
        watchlist = await self.get_one(watchlist_id)
        watchlist.symbols = _symbols([*watchlist.symbols, symbol])
        await self.session.flush()
        return watchlist
