"""Schemathesis against examples/api.py: generated requests for every operation of its own schema.

The schema is the app's own (``app.openapi()``); requests go in-process to an
app started with its real lifespan on the run's PostgreSQL database and Redis,
authenticated with an admin API key so writes reach the services. Checks: no
5xx, and every documented response matches its schema — error responses
included: the app documents its ``{"error", "detail"}`` body (``ErrorBody``)
for 401/403/404/409/422/503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from alpha_data import Database, Settings
from alpha_data.integrations.fastapi import ERROR_CODES
from alpha_data.security import set_password_hasher
from alpha_data.services import create_user, issue_api_key
from alpha_data.testing import FAST_HASHER
from examples.api import app as example_app
from examples.api import create_app
from tests.support import ALL_TABLES, REDIS_URL

#: What examples/api.py says about itself: the schema every request is generated from.
schema = schemathesis.openapi.from_dict(example_app.openapi())


@pytest.fixture(scope="module")
def fuzz_settings(database_url: str, run_name: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        cache_prefix=f"t{run_name}:fuzz",
        pool_size=3,
        max_overflow=2,
        pool_timeout=5,
        connect_timeout=5,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture(scope="module", autouse=True)
def _fast_hashing() -> Iterator[None]:
    """Sign-ups and logins hash passwords: cheap parameters keep the run short."""
    previous = set_password_hasher(FAST_HASHER)
    try:
        yield
    finally:
        set_password_hasher(previous)


@pytest.fixture(scope="module")
async def admin_key(fuzz_settings: Settings) -> AsyncIterator[str]:
    """An admin's API key (``*``); the tables are emptied after the module."""
    async with Database(fuzz_settings) as db:
        admin = await create_user(
            db,
            username="fuzz-admin",
            email="fuzz-admin@example.com",
            password="fuzzing is a virtue",
            role="admin",
        )
        _, raw = await issue_api_key(db, user_id=admin.id, name="fuzz", permissions=["*"])
    yield raw
    async with Database(fuzz_settings) as db, db.engine.begin() as conn:
        await conn.exec_driver_sql(f"TRUNCATE {', '.join(ALL_TABLES)} RESTART IDENTITY CASCADE")


@pytest.fixture(scope="module")
def fuzz_app(fuzz_settings: Settings) -> Iterator[Any]:
    """The example app; schemathesis runs its lifespan (a Database of its own) on first use."""
    app = create_app(fuzz_settings)
    yield app
    from schemathesis.python import asgi

    shutdown = getattr(asgi, "shutdown_lifespans", None)
    if shutdown is not None:
        shutdown()


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_without_5xx_and_as_documented(case, fuzz_app, admin_key):
    case.call_and_validate(
        app=fuzz_app,
        headers={"X-API-Key": admin_key},
        checks=[not_a_server_error, response_schema_conformance],
    )


async def test_422_bodies_match_the_documented_schema(real_db):
    documented = example_app.openapi()
    responses = documented["paths"]["/portfolios/{portfolio_id}/trades"]["get"]["responses"]
    assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    required = set(documented["components"]["schemas"]["ErrorBody"]["required"])
    app = create_app(database=real_db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            request_invalid = await client.get("/portfolios/1/trades", params={"limit": 0})
            service_invalid = await client.post(
                "/users",
                json={"username": "x y", "email": "xy@example.com", "password": "long enough pw"},
            )
    for response in (request_invalid, service_invalid):
        assert response.status_code == 422, response.text
        body = response.json()
        assert required <= set(body) and body["error"] == ERROR_CODES[422], body
        detail = body["detail"]
        if isinstance(detail, list):  # request validation: where and what, no input
            assert all(set(item) == {"loc", "msg"} for item in detail), detail
        else:
            assert isinstance(detail, str) and detail, detail
