"""FastAPI integration: the Database on the app's lifespan, a UoW per request, error mapping.

Usage::

    from alpha_data.integrations.fastapi import UoW, add_error_handlers, lifespan

    app = FastAPI(lifespan=lifespan(settings))
    add_error_handlers(app)

    @app.post("/portfolios/{pid}/rename")
    async def rename(pid: int, name: str, uow: UoW) -> dict[str, str]:
        portfolio = await uow.portfolios.get_one(pid)
        portfolio.name = name
        return {"name": name}          # committed before the response is sent

``get_uow`` must be used with ``scope="function"`` (the ``UoW`` and
``DbSession`` aliases do it): FastAPI then runs the code after its ``yield``
once the handler has returned and the response was built, but before anything
is sent. A successful handler's UoW is committed there, so a commit failure
becomes the error response (409/422/503) instead of a 200 for a write that did
not happen; an exception in the handler rolls the UoW back.

Error bodies are ``{"error": <code>, "detail": <message>}``; messages of 5xx
errors are generic, so nothing internal (hosts, SQL, stack traces) leaks.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException

from alpha_data.database import Database
from alpha_data.errors import DatabaseUnavailableError, DataLayerError, TransientError
from alpha_data.settings import Settings
from alpha_data.uow import UnitOfWork

__all__ = [
    "ERROR_CODES",
    "ERROR_RESPONSES",
    "DbSession",
    "ErrorBody",
    "ErrorItem",
    "ReadOnlyUoW",
    "UoW",
    "add_error_handlers",
    "add_metrics_route",
    "error_body",
    "get_database",
    "get_read_uow",
    "get_session",
    "get_uow",
    "install",
    "lifespan",
    "uow_dependency",
]

log = logging.getLogger("alpha_data.integrations.fastapi")

if "scope" not in inspect.signature(Depends).parameters:  # pragma: no cover
    raise ImportError(
        "alpha_data.integrations.fastapi needs FastAPI >= 0.121 (Depends(scope='function'))"
    )

_STATE_ATTR = "alpha_data_db"

U = TypeVar("U", bound=UnitOfWork)

#: Machine-readable codes of the JSON error body, by HTTP status.
ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    401: "authentication_failed",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_data",
    500: "internal_error",
    503: "unavailable",
}
_MAPPED = frozenset({401, 403, 404, 409, 422, 503})
_RETRY_AFTER_SECONDS = "1"


def error_body(status: int, detail: Any) -> dict[str, Any]:
    """The JSON body of every error response: ``{"error": code, "detail": ...}``."""
    return {"error": ERROR_CODES.get(status, "error"), "detail": detail}


class ErrorItem(BaseModel):
    """Where a request failed validation and why (the input is never echoed)."""

    loc: list[str]
    msg: str


class ErrorBody(BaseModel):
    """The documented body of every error response."""

    error: str
    detail: str | list[ErrorItem]


#: OpenAPI ``responses`` for the error statuses, so that the schema documents
#: the bodies the handlers send (pass to ``FastAPI(responses=...)``).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": ERROR_CODES[status].replace("_", " ")}
    for status in (401, 403, 404, 409, 422, 503)
}


# -- lifespan ----------------------------------------------------------------


def install(app: FastAPI, db: Database[Any]) -> None:
    """Put ``db`` on ``app.state`` (what the lifespan does; also for tests without one)."""
    setattr(app.state, _STATE_ATTR, db)


def lifespan(
    settings: Settings | None = None, *, database: Database[Any] | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan`` that connects a Database at start-up and closes it at shutdown.

    With ``database`` given, that Database is used and left open (its owner
    closes it); otherwise one is built from ``settings`` (or the environment).
    """

    @asynccontextmanager
    async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
        db: Database[Any] = database if database is not None else Database(settings)
        owned = database is None
        try:
            await db.connect()
            install(app, db)
            yield
        finally:
            if getattr(app.state, _STATE_ATTR, None) is db:
                delattr(app.state, _STATE_ATTR)
            if owned:
                await db.close()

    return _lifespan


def get_database(request: Request) -> Database[Any]:
    """The application's Database (503 when the lifespan has not started it)."""
    db = getattr(request.app.state, _STATE_ATTR, None)
    if not isinstance(db, Database):
        raise DatabaseUnavailableError("the data layer is not started")
    return db


# -- per-request unit of work --------------------------------------------------


def uow_dependency(
    uow_class: type[U], *, read_only: bool = False
) -> Callable[[Request], AsyncIterator[U]]:
    """A per-request dependency yielding the app's own UnitOfWork subclass, typed as such.

    For a Database built with ``unit_of_work_class=AppUoW``::

        AppUoWDep = Annotated[AppUoW, Depends(uow_dependency(AppUoW), scope="function")]

    Commits after a successful handler (unless ``read_only``), else rolls back,
    like ``get_uow``. A Database that builds another class is a wiring bug:
    TypeError (a 500), never a UoW of the wrong type.
    """

    async def dependency(request: Request) -> AsyncIterator[U]:
        db = get_database(request)
        uow = db.unit_of_work(read_only=read_only)
        if not isinstance(uow, uow_class):
            raise TypeError(
                f"the app's Database builds {type(uow).__name__}, not {uow_class.__name__}: "
                f"create it with Database(settings, unit_of_work_class={uow_class.__name__})"
            )
        async with uow:
            yield uow
            # Only reached when the handler returned normally: an exception is
            # thrown into the generator at the yield and leaves the block, which
            # rolls back.
            if not read_only and uow.active:
                await uow.commit()

    return dependency


#: One UnitOfWork per request: committed after a successful handler, else rolled back.
#: Use as ``Depends(get_uow, scope="function")`` (or the ``UoW`` alias) so that
#: the commit happens before the response is sent.
get_uow = uow_dependency(UnitOfWork)


#: ``Annotated`` dependency: the request's UnitOfWork (committed before the response).
UoW = Annotated[UnitOfWork, Depends(get_uow, scope="function")]


#: A read-only UnitOfWork for handlers that only read (nothing to commit).
get_read_uow = uow_dependency(UnitOfWork, read_only=True)


#: ``Annotated`` dependency: a read-only UnitOfWork for the request.
ReadOnlyUoW = Annotated[UnitOfWork, Depends(get_read_uow, scope="function")]


async def get_session(uow: UoW) -> AsyncSession:
    """The request's AsyncSession (the one of its UnitOfWork, same transaction)."""
    return uow.session


#: ``Annotated`` dependency: the AsyncSession of the request's UnitOfWork.
DbSession = Annotated[AsyncSession, Depends(get_session)]


# -- errors --------------------------------------------------------------------


def _error_response(
    status: int, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, detail), status_code=status, headers=headers)


async def _data_layer_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DataLayerError)
    status = exc.status_code if exc.status_code in _MAPPED else 500
    if isinstance(exc, TransientError):
        status = 503
    headers: dict[str, str] = {}
    if status == 503:
        log.warning("data layer unavailable: %s", exc.message)
        detail = "the service is temporarily unavailable; retry later"
        headers["Retry-After"] = _RETRY_AFTER_SECONDS
    elif status == 500:
        log.error("unexpected data layer error: %r", exc)
        detail = "internal server error"
    else:
        detail = exc.message
    if status == 401:
        headers["WWW-Authenticate"] = "ApiKey"
    return _error_response(status, detail, headers or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only where and what, never the input (it may be a password).
    detail = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    return _error_response(422, detail)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error_response(exc.status_code, exc.detail, dict(exc.headers or {}) or None)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _error_response(500, "internal server error")


def add_error_handlers(app: FastAPI) -> None:
    """Map alpha_data errors to 401/403/404/409/422/503 JSON responses.

    Also gives request-validation errors and HTTPExceptions the same body
    shape (without echoing input), and turns anything unexpected into a
    generic 500. Call when creating the app, before it starts.
    """
    app.add_exception_handler(DataLayerError, _data_layer_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


# -- metrics -------------------------------------------------------------------


def add_metrics_route(app: FastAPI, path: str = "/metrics") -> bool:
    """Serve Prometheus metrics at ``path`` when prometheus-client is installed.

    The response holds the numbers of ``db.stats()`` for the app's Database
    (see alpha_data.integrations.prometheus) followed by prometheus-client's
    default registry (process metrics and whatever the application
    registered there). Returns False, adding nothing, without prometheus-client.
    """
    from alpha_data.integrations import prometheus

    if not prometheus.available():
        return False
    from prometheus_client import CollectorRegistry  # type: ignore[import-not-found,unused-ignore]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(prometheus.DatabaseCollector(lambda: getattr(app.state, _STATE_ATTR, None)))

    async def metrics() -> Response:
        from prometheus_client import REGISTRY  # type: ignore[import-not-found,unused-ignore]

        body, content_type = prometheus.exposition(registry, REGISTRY)
        return Response(body, media_type=content_type)

    app.add_api_route(path, metrics, methods=["GET"], include_in_schema=False, tags=["ops"])
    return True
