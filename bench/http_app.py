"""The example API plus raw-asyncpg twins of two routes, for the HTTP benchmark.

``/portfolios/{id}`` (the library, cached) vs ``/raw/portfolios/{id}``, and
``/bench/users/{id}`` (a read-only unit of work, cached ``users.get``) vs
``/raw/users/{id}``: same app, same server, same response models.
Settings come from the environment (ALPHA_DATA_*), as for ``alpha-data serve``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI

from alpha_data import Database, Settings
from alpha_data.errors import NotFoundError
from alpha_data.integrations.fastapi import get_database
from bench.bench_repositories import PORTFOLIO_SQL, POSITIONS_SQL, USER_SQL
from bench.setup import dsn
from examples.api import PortfolioWithPositionsOut, UserOut, create_app

settings = Settings()
app: FastAPI = create_app(settings)
_pool: list[asyncpg.Pool] = []
_lock = asyncio.Lock()


async def raw_pool() -> asyncpg.Pool:
    """One asyncpg pool of the same size as the library's, made on first use."""
    async with _lock:
        if not _pool:
            size = settings.pool_size
            _pool.append(await asyncpg.create_pool(dsn(settings.database_url), max_size=size))
    return _pool[0]


Pool = Annotated[asyncpg.Pool, Depends(raw_pool)]
Db = Annotated[Database, Depends(get_database)]


@app.get("/bench/users/{user_id}", response_model=UserOut)
async def ours_user(user_id: int, db: Db) -> Any:
    async with db.unit_of_work(read_only=True) as uow:
        user = await uow.users.get(user_id)
    if user is None:
        raise NotFoundError(f"User {user_id} not found")
    return user


@app.get("/raw/users/{user_id}", response_model=UserOut)
async def raw_user(user_id: int, pool: Pool) -> Any:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(USER_SQL, user_id)
    if row is None:
        raise NotFoundError(f"User {user_id} not found")
    return dict(row)


@app.get("/raw/portfolios/{portfolio_id}", response_model=PortfolioWithPositionsOut)
async def raw_portfolio(portfolio_id: int, pool: Pool) -> Any:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(PORTFOLIO_SQL, portfolio_id)
        if row is None:
            raise NotFoundError(f"Portfolio {portfolio_id} not found")
        positions = await conn.fetch(POSITIONS_SQL, portfolio_id)
    return {**dict(row), "positions": [dict(p) for p in positions]}
