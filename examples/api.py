"""A small but real HTTP API over alpha_data's services (``uvicorn examples.api:app``).

Writes need an API key in the ``X-API-Key`` header; reads are open. Getting
started::

    POST /users            {"username", "email", "password"}        -> a viewer (open sign-up)
    POST /auth/keys        {"username", "password", "name"}         -> {"key": "ak_….…", ...}
    POST /portfolios       X-API-Key (portfolios:write)             -> a portfolio
    POST /portfolios/{id}/trades   X-API-Key (trades:write)         -> a trade, position moved

A role decides what its keys may hold: viewer ``read``; trader ``read``,
``portfolios:write``, ``trades:write``, ``alerts:write``, ``metrics:write``;
admin ``*``. Only a key with ``users:write`` creates traders and admins.
Errors are ``{"error": code, "detail": message}`` (see alpha_data.integrations.fastapi).
``GET /metrics`` serves Prometheus metrics when prometheus-client is installed.
Request bodies are limited to 1 MiB (``examples.body_limit.MAX_BODY_BYTES``):
larger ones get 413 before they are read whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security, status
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from alpha_data import Database, Settings
from alpha_data.errors import (
    AuthenticationError,
    DatabaseUnavailableError,
    NotFoundError,
    PermissionDeniedError,
)
from alpha_data.integrations.fastapi import (
    ERROR_RESPONSES,
    ReadOnlyUoW,
    UoW,
    add_error_handlers,
    add_metrics_route,
    get_database,
    lifespan,
)
from alpha_data.models import ApiKey, OrderType, Role, Severity, Side, TradeStatus
from alpha_data.security import has_permission
from alpha_data.services import (
    acknowledge_alert,
    authenticate,
    authenticate_api_key,
    create_portfolio,
    create_user,
    get_cached_portfolio,
    insert_portfolio_metrics,
    issue_api_key,
    raise_alert,
    record_trade,
)
from examples.body_limit import MAX_BODY_BYTES, BodySizeLimit

__all__ = ["ROLE_PERMISSIONS", "app", "create_app"]

#: What the keys of each role may be granted.
ROLE_PERMISSIONS: dict[Role, list[str]] = {
    Role.VIEWER: ["read"],
    Role.TRADER: [
        "read",
        "portfolios:write",
        "trades:write",
        "alerts:write",
        "metrics:write",
    ],
    Role.ADMIN: ["*"],
}

PORTFOLIO_VALUE = "portfolio_value"

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key `<prefix>.<secret>` as returned once by POST /auth/keys.",
)

# -- schemas -------------------------------------------------------------------

Text64 = Annotated[str, Field(min_length=1, max_length=64)]
Text200 = Annotated[str, Field(min_length=1, max_length=200)]


class Out(BaseModel):
    """Response models read ORM objects' attributes."""

    model_config = ConfigDict(from_attributes=True)


class UserIn(BaseModel):
    """Sign-up payload."""

    model_config = ConfigDict(extra="forbid")
    username: Text64
    email: Annotated[str, Field(min_length=3, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]
    role: Role = Role.VIEWER


class UserOut(Out):
    """A user (never its password hash)."""

    id: int
    username: str
    email: str
    role: Role
    is_active: bool
    created_at: datetime
    last_login: datetime | None = None


class KeyRequest(BaseModel):
    """Password login that mints an API key."""

    model_config = ConfigDict(extra="forbid")
    username: Text64
    password: Annotated[str, Field(min_length=1, max_length=1024)]
    name: Annotated[str, Field(min_length=1, max_length=100)] = "default"
    permissions: Annotated[list[Text64], Field(max_length=32)] | None = None
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class ApiKeyOut(Out):
    """An API key's public data."""

    id: int
    user_id: int
    name: str
    prefix: str
    permissions: list[str]
    expires_at: datetime | None = None
    last_used: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime


class IssuedKeyOut(ApiKeyOut):
    """A freshly issued key: ``key`` is shown this one time only."""

    key: str


class PortfolioIn(BaseModel):
    """A new portfolio."""

    model_config = ConfigDict(extra="forbid")
    name: Text200
    description: Annotated[str, Field(max_length=10_000)] | None = None


class PortfolioPatch(BaseModel):
    """Fields of a portfolio to change."""

    model_config = ConfigDict(extra="forbid")
    name: Text200 | None = None
    description: Annotated[str, Field(max_length=10_000)] | None = None


class PositionOut(Out):
    """A holding of one symbol."""

    symbol: str
    quantity: Decimal
    entry_price: Decimal
    current_price: Decimal | None = None
    updated_at: datetime


class PortfolioOut(Out):
    """A portfolio."""

    id: int
    name: str
    description: str | None = None
    version: int
    created_at: datetime
    updated_at: datetime


class PortfolioWithPositionsOut(PortfolioOut):
    """A portfolio with its positions."""

    positions: list[PositionOut]


Money = Annotated[Decimal, Field(allow_inf_nan=False)]


class TradeIn(BaseModel):
    """A trade to record; ``external_id`` makes retries safe (idempotent)."""

    model_config = ConfigDict(extra="forbid")
    symbol: Annotated[str, Field(min_length=1, max_length=32)]
    side: Side
    quantity: Money
    price: Money
    fees: Money = Decimal("0")
    order_type: OrderType = OrderType.MARKET
    external_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class TradeOut(Out):
    """A recorded trade."""

    id: int
    portfolio_id: int
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fees: Decimal
    order_type: OrderType
    status: TradeStatus
    executed_at: datetime
    external_id: str | None = None


class TradePageOut(BaseModel):
    """One page of trades, newest first; pass ``next_cursor`` as ``after``."""

    items: list[TradeOut]
    next_cursor: str | None = None


class AlertIn(BaseModel):
    """An alert to raise."""

    model_config = ConfigDict(extra="forbid")
    title: Text200
    message: Annotated[str, Field(min_length=1, max_length=10_000)]
    severity: Severity
    source: Annotated[str, Field(min_length=1, max_length=100)]
    tags: Annotated[list[Text64], Field(max_length=20)] = []


class AlertOut(Out):
    """An alert."""

    id: int
    title: str
    message: str
    severity: Severity
    source: str
    tags: list[str]
    acknowledged: bool
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    created_at: datetime


class MetricIn(BaseModel):
    """A valuation of a portfolio."""

    model_config = ConfigDict(extra="forbid")
    value: Annotated[float, Field(allow_inf_nan=False)]
    timestamp: datetime | None = None


class MetricPointOut(BaseModel):
    """One point of a metric series."""

    time: datetime
    metric_name: str
    value: float
    labels: dict[str, str]


class Health(BaseModel):
    """Reachability of PostgreSQL and the cache."""

    status: str
    database: bool
    cache: bool


# -- authentication -----------------------------------------------------------

RawKey = Annotated[str | None, Security(api_key_header)]


def requires(permission: str | None) -> Callable[..., Awaitable[ApiKey]]:
    """Dependency: the request's API key, which must grant ``permission`` (401/403)."""

    async def dependency(request: Request, raw_key: RawKey) -> ApiKey:
        if not raw_key:
            raise AuthenticationError("this endpoint needs an API key in the X-API-Key header")
        return await authenticate_api_key(get_database(request), raw_key, permission=permission)

    return dependency


async def optional_key(request: Request, raw_key: RawKey) -> ApiKey | None:
    """The request's API key if one was sent (validated), else None."""
    if not raw_key:
        return None
    return await authenticate_api_key(get_database(request), raw_key)


# -- routes ---------------------------------------------------------------------

router = APIRouter()
Db = Annotated[Database, Depends(get_database)]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/health", tags=["ops"])
async def health(db: Db) -> Health:
    """Liveness of the data layer (503 when PostgreSQL is down)."""
    report = await db.health()
    if not report.ok:
        raise DatabaseUnavailableError("database down")
    return Health(status=report.status, database=report.database.ok, cache=report.cache.ok)


@router.post("/users", status_code=status.HTTP_201_CREATED, tags=["users"])
async def sign_up(
    body: UserIn, db: Db, key: Annotated[ApiKey | None, Depends(optional_key)]
) -> UserOut:
    """Create a user: viewers sign up freely, other roles need a ``users:write`` key."""
    if body.role is not Role.VIEWER:
        if key is None:
            raise AuthenticationError("creating a trader or admin needs an API key (users:write)")
        if not has_permission(key.permissions, "users:write"):
            raise PermissionDeniedError("this API key lacks the permission 'users:write'")
    user = await create_user(
        db, username=body.username, email=body.email, password=body.password, role=body.role
    )
    return UserOut.model_validate(user)


@router.post("/auth/keys", status_code=status.HTTP_201_CREATED, tags=["users"])
async def login_for_key(body: KeyRequest, db: Db) -> IssuedKeyOut:
    """Check username and password and mint an API key (shown once).

    ``permissions`` default to everything the user's role allows and may not exceed it.
    """
    user = await authenticate(db, username=body.username, password=body.password)
    allowed = ROLE_PERMISSIONS[user.role]
    wanted = body.permissions if body.permissions is not None else allowed
    refused = [p for p in wanted if not has_permission(allowed, p)]
    if refused:
        raise PermissionDeniedError(f"role {user.role.value} cannot grant {', '.join(refused)}")
    expires_at = (
        datetime.now(timezone.utc) + timedelta(days=body.expires_in_days)
        if body.expires_in_days is not None
        else None
    )
    key, raw = await issue_api_key(
        db, user_id=user.id, name=body.name, permissions=wanted, expires_at=expires_at
    )
    return IssuedKeyOut.model_validate({**ApiKeyOut.model_validate(key).model_dump(), "key": raw})


@router.get("/me", tags=["users"])
async def me(key: Annotated[ApiKey, Depends(requires(None))], uow: ReadOnlyUoW) -> UserOut:
    """The owner of the API key sent."""
    return UserOut.model_validate(await uow.users.get_one(key.user_id))


@router.post("/portfolios", status_code=status.HTTP_201_CREATED, tags=["portfolios"])
async def new_portfolio(
    body: PortfolioIn, db: Db, _: Annotated[ApiKey, Depends(requires("portfolios:write"))]
) -> PortfolioOut:
    """Create a portfolio."""
    portfolio = await create_portfolio(db, name=body.name, description=body.description)
    return PortfolioOut.model_validate(portfolio)


@router.get("/portfolios/{portfolio_id}", tags=["portfolios"])
async def show_portfolio(portfolio_id: Id, db: Db) -> PortfolioWithPositionsOut:
    """A portfolio with its positions (served from the cache when fresh)."""
    portfolio = await get_cached_portfolio(db, portfolio_id)
    if portfolio is None:
        raise NotFoundError(f"Portfolio {portfolio_id} not found")
    return PortfolioWithPositionsOut.model_validate(portfolio)


@router.patch("/portfolios/{portfolio_id}", tags=["portfolios"])
async def edit_portfolio(
    portfolio_id: Id,
    body: PortfolioPatch,
    uow: UoW,
    _: Annotated[ApiKey, Depends(requires("portfolios:write"))],
) -> PortfolioOut:
    """Rename or describe a portfolio (in the request's unit of work, committed before 200)."""
    portfolio = await uow.portfolios.get_one(portfolio_id)
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is not None:
        portfolio.name = changes["name"]
    if "description" in changes:
        portfolio.description = changes["description"]
    await uow.flush()
    return PortfolioOut.model_validate(portfolio)


@router.get("/portfolios/{portfolio_id}/positions", tags=["portfolios"])
async def positions(portfolio_id: Id, uow: ReadOnlyUoW) -> list[PositionOut]:
    """Positions of a portfolio, by symbol."""
    if await uow.portfolios.get(portfolio_id) is None:
        raise NotFoundError(f"Portfolio {portfolio_id} not found")
    held = await uow.portfolios.list_positions(portfolio_id)
    return [PositionOut.model_validate(p) for p in held]


@router.post(
    "/portfolios/{portfolio_id}/trades", status_code=status.HTTP_201_CREATED, tags=["trades"]
)
async def new_trade(
    portfolio_id: Id,
    body: TradeIn,
    db: Db,
    _: Annotated[ApiKey, Depends(requires("trades:write"))],
) -> TradeOut:
    """Record a trade and move the position (idempotent by ``external_id``)."""
    trade = await record_trade(
        db,
        portfolio_id=portfolio_id,
        symbol=body.symbol,
        side=body.side,
        quantity=body.quantity,
        price=body.price,
        fees=body.fees,
        order_type=body.order_type,
        external_id=body.external_id,
    )
    return TradeOut.model_validate(trade)


@router.get("/portfolios/{portfolio_id}/trades", tags=["trades"])
async def trades(
    portfolio_id: Id,
    uow: ReadOnlyUoW,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    after: Annotated[str | None, Query(max_length=512)] = None,
) -> TradePageOut:
    """Trades of a portfolio, newest first, keyset-paginated."""
    page = await uow.portfolios.list_trades(portfolio_id, limit=limit, after=after)
    return TradePageOut(
        items=[TradeOut.model_validate(t) for t in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/portfolios/{portfolio_id}/metrics", status_code=status.HTTP_201_CREATED, tags=["metrics"]
)
async def new_metric(
    portfolio_id: Id,
    body: MetricIn,
    db: Db,
    _: Annotated[ApiKey, Depends(requires("metrics:write"))],
) -> MetricPointOut:
    """Record a valuation of the portfolio (metric ``portfolio_value``)."""
    if await get_cached_portfolio(db, portfolio_id) is None:
        raise NotFoundError(f"Portfolio {portfolio_id} not found")
    point = await insert_portfolio_metrics(db, portfolio_id, body.value, body.timestamp)
    return MetricPointOut(
        time=point.time, metric_name=point.metric_name, value=point.value, labels=point.labels
    )


@router.get("/portfolios/{portfolio_id}/metrics", tags=["metrics"])
async def metrics(
    portfolio_id: Id,
    uow: ReadOnlyUoW,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[MetricPointOut]:
    """Valuations of the portfolio in [start, end), newest first (default: the last day)."""
    end = end or datetime.now(timezone.utc)
    start = start or end - timedelta(days=1)
    points: Any = await uow.metrics.range(
        PORTFOLIO_VALUE, start, end, labels={"portfolio_id": str(portfolio_id)}, limit=limit
    )
    return [
        MetricPointOut(time=p.time, metric_name=p.metric_name, value=p.value, labels=p.labels)
        for p in points
    ]


@router.post("/alerts", status_code=status.HTTP_201_CREATED, tags=["alerts"])
async def new_alert(
    body: AlertIn, db: Db, _: Annotated[ApiKey, Depends(requires("alerts:write"))]
) -> AlertOut:
    """Raise an alert (subscribers get ``AlertRaised``)."""
    alert = await raise_alert(
        db,
        title=body.title,
        message=body.message,
        severity=body.severity,
        source=body.source,
        tags=body.tags,
    )
    return AlertOut.model_validate(alert)


@router.get("/alerts", tags=["alerts"])
async def open_alerts(
    uow: ReadOnlyUoW,
    severity: Severity | None = None,
    source: Annotated[str | None, Query(max_length=100)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
) -> list[AlertOut]:
    """Unacknowledged alerts, newest first."""
    alerts = await uow.alerts.list_open(severity=severity, source=source, tag=tag)
    return [AlertOut.model_validate(a) for a in alerts]


@router.post("/alerts/{alert_id}/ack", tags=["alerts"])
async def ack_alert(
    alert_id: Id,
    db: Db,
    key: Annotated[ApiKey, Depends(requires("alerts:write"))],
) -> AlertOut:
    """Acknowledge an alert in the name of the key's owner (idempotent)."""
    async with db.unit_of_work(read_only=True) as uow:
        owner = await uow.users.get_one(key.user_id)
    return AlertOut.model_validate(await acknowledge_alert(db, alert_id, by=owner.username))


# -- the app ----------------------------------------------------------------------


def create_app(settings: Settings | None = None, *, database: Database | None = None) -> FastAPI:
    """The example API; the Database is created (or ``database`` used) by its lifespan."""
    app = FastAPI(
        title="AlphaPulse data API (alpha_data example)",
        version="0.1.0",
        lifespan=lifespan(settings, database=database),
        responses=ERROR_RESPONSES,
    )
    add_error_handlers(app)
    # Bodies over MAX_BODY_BYTES (1 MiB) get 413 before they are read whole.
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.include_router(router)
    add_metrics_route(app)  # GET /metrics when prometheus-client is installed
    return app


app = create_app()
