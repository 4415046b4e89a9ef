"""HTTP routes: list and create a user's watchlists, add a symbol."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from alpha_data import Database
from alpha_data.integrations.fastapi import add_error_handlers, lifespan, uow_dependency
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, ConfigDict

from watchlists.models import Watchlist
from watchlists.uow import WatchlistUoW

__all__ = ["WatchlistIn", "WatchlistOut", "create_app", "router"]

#: A unit of work per request, committed after the handler returns.
Uow = Annotated[WatchlistUoW, Depends(uow_dependency(WatchlistUoW), scope="function")]
ReadUow = Annotated[
    WatchlistUoW, Depends(uow_dependency(WatchlistUoW, read_only=True), scope="function")
]

router = APIRouter()


class WatchlistIn(BaseModel):
    """A new watchlist."""

    name: str
    symbols: list[str] = []


class WatchlistOut(BaseModel):
    """A stored watchlist."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str
    symbols: list[str]
    created_at: datetime
    updated_at: datetime


def _out(watchlist: Watchlist) -> WatchlistOut:
    return WatchlistOut.model_validate(watchlist)


@router.get("/users/{user_id}/watchlists")
async def list_watchlists(user_id: int, uow: ReadUow) -> list[WatchlistOut]:
    """The user's watchlists (a cached read)."""
    return [_out(w) for w in await uow.watchlists.for_user(user_id)]


@router.post("/users/{user_id}/watchlists", status_code=201)
async def create_watchlist(user_id: int, body: WatchlistIn, uow: Uow) -> WatchlistOut:
    """Create a watchlist for the user (422 for bad input or an unknown user, 409 duplicate)."""
    return _out(await uow.watchlists.create(user_id, body.name, body.symbols))


@router.post("/watchlists/{watchlist_id}/symbols/{symbol}")
async def add_symbol(watchlist_id: int, symbol: str, uow: Uow) -> WatchlistOut:
    """Add a symbol to a watchlist (404 when it does not exist)."""
    return _out(await uow.watchlists.add_symbol(watchlist_id, symbol))


def create_app(database: Database[WatchlistUoW]) -> FastAPI:
    """The app: ``database`` connected on start-up, alpha_data's error bodies."""
    app = FastAPI(title="watchlists", lifespan=lifespan(database=database))
    add_error_handlers(app)
    app.include_router(router)
    return app
