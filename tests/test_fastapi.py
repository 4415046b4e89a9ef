"""FastAPI integration and the example API, over httpx's ASGI transport on the real pool."""

from __future__ import annotations

import contextlib
import json
import random
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from sqlalchemy import func, select

from alpha_data import Database, Settings, UnitOfWork
from alpha_data.errors import DatabaseUnavailableError
from alpha_data.integrations.fastapi import (
    DbSession,
    UoW,
    add_error_handlers,
    install,
    lifespan,
)
from alpha_data.models import User
from alpha_data.repositories import MetricsRepository
from alpha_data.services import create_user
from alpha_data.testing.factories import FAKE_HASH
from examples.api import create_app

PASSWORD = "correct horse battery"


@contextlib.asynccontextmanager
async def serve(app: FastAPI, *, raise_app_exceptions: bool = True):
    """Run the app's lifespan (ASGITransport does not) and give a client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def client(real_db):
    async with serve(create_app(database=real_db)) as c:
        yield c


async def key_for(client, db, username, role):
    """Create a user (directly) and log in for an API key with all its role allows."""
    await create_user(
        db, username=username, email=f"{username}@example.com", password=PASSWORD, role=role
    )
    r = await client.post("/auth/keys", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return {"X-API-Key": r.json()["key"]}


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code
    return body["detail"]


# -- the example API ------------------------------------------------------------------


async def test_sign_up_login_and_roles(client, real_db):
    r = await client.post(
        "/users", json={"username": "vic", "email": "vic@example.com", "password": PASSWORD}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["role"] == "viewer" and "password" not in r.text and "argon2" not in r.text

    r = await client.post("/auth/keys", json={"username": "vic", "password": PASSWORD})
    assert r.status_code == 201
    issued = r.json()
    assert issued["permissions"] == ["read"] and issued["key"].startswith(issued["prefix"] + ".")
    viewer = {"X-API-Key": issued["key"]}
    assert (await client.get("/me", headers=viewer)).json()["username"] == "vic"

    trader_body = {"username": "tom", "email": "tom@example.com", "password": PASSWORD}
    r = await client.post("/users", json={**trader_body, "role": "trader"})
    assert_error(r, 401, "authentication_failed")
    assert r.headers["www-authenticate"] == "ApiKey"
    r = await client.post("/users", json={**trader_body, "role": "trader"}, headers=viewer)
    assert_error(r, 403, "permission_denied")
    admin = await key_for(client, real_db, "root", "admin")
    r = await client.post("/users", json={**trader_body, "role": "trader"}, headers=admin)
    assert r.status_code == 201 and r.json()["role"] == "trader"

    r = await client.post(
        "/auth/keys", json={"username": "tom", "password": PASSWORD, "permissions": ["*"]}
    )
    assert_error(r, 403, "permission_denied")
    r = await client.post("/auth/keys", json={"username": "tom", "password": "wrong password!"})
    assert_error(r, 401, "authentication_failed")
    r = await client.post(
        "/auth/keys",
        json={
            "username": "tom",
            "password": PASSWORD,
            "permissions": ["trades:write"],
            "expires_in_days": 1,
        },
    )
    assert r.status_code == 201 and r.json()["expires_at"] is not None

    r = await client.post("/users", json=trader_body)
    assert_error(r, 409, "conflict")
    r = await client.get("/me", headers={"X-API-Key": "ak_000000000000." + "x" * 43})
    assert_error(r, 401, "authentication_failed")


async def test_portfolio_trades_positions_alerts(client, real_db):
    trader = await key_for(client, real_db, "tina", "trader")
    viewer = await key_for(client, real_db, "vera", "viewer")

    r = await client.post("/portfolios", json={"name": "Macro"})
    assert_error(r, 401, "authentication_failed")
    r = await client.post("/portfolios", json={"name": "Macro"}, headers=viewer)
    assert_error(r, 403, "permission_denied")
    r = await client.post("/portfolios", json={"name": "Macro"}, headers=trader)
    assert r.status_code == 201
    pid = r.json()["id"]

    trades = [
        {"symbol": "AAPL", "side": "buy", "quantity": "10", "price": "100"},
        {"symbol": "AAPL", "side": "buy", "quantity": 5, "price": 130},
        {"symbol": "AAPL", "side": "sell", "quantity": "4.5", "price": "140", "fees": "1.25"},
        {"symbol": "MSFT", "side": "buy", "quantity": "1", "price": "410.5", "external_id": "o-1"},
    ]
    ids = []
    for trade in trades:
        r = await client.post(f"/portfolios/{pid}/trades", json=trade, headers=trader)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    r = await client.post(f"/portfolios/{pid}/trades", json=trades[-1], headers=trader)
    assert r.json()["id"] == ids[-1]  # idempotent

    r = await client.post(
        f"/portfolios/{pid}/trades",
        json={"symbol": "AAPL", "side": "sell", "quantity": "999", "price": "1"},
        headers=trader,
    )
    assert "holds 10.5" in assert_error(r, 422, "invalid_data")

    positions = (await client.get(f"/portfolios/{pid}/positions")).json()
    assert [
        (p["symbol"], Decimal(p["quantity"]), Decimal(p["entry_price"])) for p in positions
    ] == [
        ("AAPL", Decimal("10.5"), Decimal("110")),
        ("MSFT", Decimal("1"), Decimal("410.5")),
    ]
    portfolio = (await client.get(f"/portfolios/{pid}")).json()
    assert portfolio["name"] == "Macro" and len(portfolio["positions"]) == 2

    page = (await client.get(f"/portfolios/{pid}/trades", params={"limit": 3})).json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = (
        await client.get(
            f"/portfolios/{pid}/trades", params={"limit": 3, "after": page["next_cursor"]}
        )
    ).json()
    assert {t["id"] for t in page["items"] + rest["items"]} == set(ids)
    assert rest["next_cursor"] is None

    r = await client.patch(f"/portfolios/{pid}", json={"description": "rates"}, headers=trader)
    assert r.status_code == 200 and r.json()["version"] == 2
    assert (await client.get(f"/portfolios/{pid}")).json()["description"] == "rates"

    assert_error(await client.get("/portfolios/999999"), 404, "not_found")
    assert_error(await client.get("/portfolios/999999/positions"), 404, "not_found")
    r = await client.post(
        "/portfolios/999999/trades",
        json={"symbol": "X", "side": "buy", "quantity": 1, "price": 1},
        headers=trader,
    )
    assert_error(r, 404, "not_found")

    r = await client.post(
        "/alerts",
        json={
            "title": "Drawdown",
            "message": "-7%",
            "severity": "warning",
            "source": "risk",
            "tags": ["risk"],
        },
        headers=trader,
    )
    assert r.status_code == 201
    alert_id = r.json()["id"]
    open_ids = [a["id"] for a in (await client.get("/alerts", params={"tag": "risk"})).json()]
    assert alert_id in open_ids
    r = await client.post(f"/alerts/{alert_id}/ack", headers=trader)
    assert r.json()["acknowledged_by"] == "tina"
    assert alert_id not in [a["id"] for a in (await client.get("/alerts")).json()]
    assert_error(await client.post("/alerts/999999/ack", headers=trader), 404, "not_found")


@pytest.mark.skipif(
    not hasattr(MetricsRepository, "range"), reason="metrics repository not landed yet"
)
async def test_metrics_endpoints(client, real_db):
    trader = await key_for(client, real_db, "mia", "trader")
    pid = (await client.post("/portfolios", json={"name": "M"}, headers=trader)).json()["id"]
    r = await client.post(f"/portfolios/{pid}/metrics", json={"value": 1234.5}, headers=trader)
    assert r.status_code == 201, r.text
    r = await client.post("/portfolios/999999/metrics", json={"value": 1}, headers=trader)
    assert_error(r, 404, "not_found")
    points = (await client.get(f"/portfolios/{pid}/metrics")).json()
    assert [p["value"] for p in points] == [1234.5]
    assert points[0]["labels"] == {"portfolio_id": str(pid)}


async def test_validation_errors_do_not_echo_input(client):
    secret = "my secret password that is way too long " * 40
    r = await client.post(
        "/users", json={"username": "sam", "email": "sam@example.com", "password": secret}
    )
    detail = assert_error(r, 422, "invalid_data")
    assert secret[:30] not in r.text and detail
    r = await client.post(
        "/users", json={"username": "sam", "email": "sam@example.com", "password": "tiny"}
    )
    assert "at least 12" in assert_error(r, 422, "invalid_data") and "tiny" not in r.text
    r = await client.post("/users", json={"username": "sam", "email": "x", "password": ["p4ss"]})
    detail = assert_error(r, 422, "invalid_data")
    assert all(set(d) == {"loc", "msg"} for d in detail) and "p4ss" not in r.text


def test_openapi_schema_is_generated():
    schema = create_app().openapi()
    assert "/portfolios/{portfolio_id}/trades" in schema["paths"]
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


# -- the dependency: one UoW per request, committed before the response --------------


def uow_app(db: Database) -> FastAPI:
    app = FastAPI(lifespan=lifespan(database=db))
    add_error_handlers(app)

    def user(name: str) -> User:
        return User(username=name, email=f"{name}@example.com", password_hash=FAKE_HASH)

    @app.post("/ok/{name}")
    async def ok(name: str, uow: UoW) -> dict[str, int]:
        added = await uow.users.add(user(name))
        return {"id": added.id}

    @app.post("/fails-at-commit/{name}")
    async def fails_at_commit(name: str, uow: UoW) -> dict[str, bool]:
        uow.session.add(user(name))  # not flushed: the duplicate surfaces in commit()
        return {"ok": True}

    @app.post("/boom/{name}")
    async def boom(name: str, uow: UoW) -> None:
        await uow.users.add(user(name))
        raise RuntimeError("boom: internal detail")

    @app.post("/http-error/{name}")
    async def http_error(name: str, uow: UoW) -> None:
        await uow.users.add(user(name))
        raise HTTPException(status_code=400, detail="bad request")

    @app.get("/same-session")
    async def same_session(uow: UoW, session: DbSession) -> dict[str, bool]:
        return {"same": uow.session is session, "uow": isinstance(uow, UnitOfWork)}

    return app


async def usernames(db: Database) -> set[str]:
    async with db.unit_of_work(read_only=True) as uow:
        return set((await uow.session.execute(select(User.username))).scalars())


async def test_uow_is_committed_on_success_and_rolled_back_on_error(real_db):
    app = uow_app(real_db)
    async with serve(app) as client:
        r = await client.post("/ok/ana")
        assert r.status_code == 200 and r.json()["id"] > 0
        assert await usernames(real_db) == {"ana"}

        r = await client.post("/fails-at-commit/ana")
        assert "already taken" in assert_error(r, 409, "conflict")  # never a 200

        r = await client.post("/http-error/bob")
        assert assert_error(r, 400, "bad_request") == "bad request"

        r = await client.get("/same-session")
        assert r.json() == {"same": True, "uow": True}

    async with serve(app, raise_app_exceptions=False) as client:
        r = await client.post("/boom/carl")
        assert assert_error(r, 500, "internal_error") == "internal server error"
        assert "boom" not in r.text
    assert await usernames(real_db) == {"ana"}


async def test_unreachable_database_is_503_without_internals(settings):
    dead = Database(
        Settings(
            database_url="postgresql+asyncpg://postgres:pw@127.0.0.1:1/nowhere",
            redis_url="memory://",
            connect_timeout=0.3,
            pool_timeout=0.5,
            _env_file=None,  # type: ignore[call-arg]
        )
    )
    app = create_app(database=dead)
    install(app, dead)  # as if started, without the lifespan's connect
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in ("/portfolios/1", "/alerts", "/portfolios/1/positions"):
                r = await client.get(path)
                assert_error(r, 503, "unavailable")
                assert r.headers["retry-after"]
                assert "127.0.0.1" not in r.text and "nowhere" not in r.text
            with pytest.raises(DatabaseUnavailableError):
                async with app.router.lifespan_context(app):
                    pass
    finally:
        await dead.close()


async def test_not_started_app_answers_503():
    app = create_app(Settings(redis_url="memory://", _env_file=None))  # type: ignore[call-arg]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert_error(await client.get("/alerts"), 503, "unavailable")


async def test_lifespan_creates_and_closes_its_database(settings):
    app = create_app(settings)
    async with serve(app) as client:
        db = app.state.alpha_data_db
        assert isinstance(db, Database) and db.settings is settings
        r = await client.get("/health")
        assert r.status_code == 200 and r.json()["database"] is True
    assert not hasattr(app.state, "alpha_data_db")
    assert db._closed


# -- hostile input: never a 5xx ---------------------------------------------------------


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**63) - 1, 10**30, 2**31])
    if kind == 3:
        return rng.choice([0.1, -1e308, 1e308, 1e-320, 3.14])
    if kind == 4:
        return rng.choice(["", "a" * 5000, "\x00", "' OR 1=1 --", "ü🙂", "\ud7ff", "1e400", "NaN"])
    if kind == 5:
        return rng.choice(["buy", "sell", "AAPL", "critical", "ak_0.x", "2024-01-01T00:00:00"])
    if kind == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "username",
        "email",
        "password",
        "role",
        "name",
        "description",
        "symbol",
        "side",
        "quantity",
        "price",
        "fees",
        "order_type",
        "external_id",
        "title",
        "message",
        "severity",
        "source",
        "tags",
        "permissions",
        "expires_in_days",
        "value",
        "timestamp",
        "extra",
    ]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(6))}


HOSTILE_BODIES = [
    None,
    b"",
    b"{",
    b"[]",
    b"null",
    b'"string"',
    b"\xff\xfe\x00",
    b'{"quantity": 1e400, "price": NaN}',
    json.dumps({"symbol": "AAPL", "side": "buy", "quantity": "1e-9", "price": "1"}).encode(),
    json.dumps({"symbol": "AAPL", "side": "buy", "quantity": "1e30", "price": "1"}).encode(),
    json.dumps({"symbol": "AAPL", "side": "buy", "quantity": "-0", "price": "Infinity"}).encode(),
    json.dumps({"symbol": "\x00", "side": "buy", "quantity": 1, "price": 1}).encode(),
    json.dumps({"name": "\x00"}).encode(),
    json.dumps(
        {"title": "t", "message": "m", "severity": "info", "source": "s", "tags": ["\x00"]}
    ).encode(),
    json.dumps({"username": "a\x00b", "email": "a@b.co", "password": "p" * 20}).encode(),
    json.dumps({"value": 1e308, "timestamp": "2024-01-01T00:00:00"}).encode(),
    json.dumps({"value": 1, "timestamp": "9999-12-31T23:59:59+14:00"}).encode(),
]

WRITE_PATHS = [
    ("POST", "/users"),
    ("POST", "/auth/keys"),
    ("POST", "/portfolios"),
    ("PATCH", "/portfolios/{pid}"),
    ("POST", "/portfolios/{pid}/trades"),
    ("POST", "/portfolios/{pid}/metrics"),
    ("POST", "/alerts"),
    ("POST", "/alerts/{aid}/ack"),
]

READ_PATHS = [
    "/portfolios/0",
    "/portfolios/-1",
    "/portfolios/9223372036854775808",
    "/portfolios/abc",
    "/portfolios/1/trades?limit=0",
    "/portfolios/1/trades?limit=100000",
    "/portfolios/1/trades?after=garbage",
    "/portfolios/1/trades?after=" + "A" * 600,
    "/portfolios/1/metrics?start=2024-01-01T00:00:00&end=2023-01-01T00:00:00",
    "/portfolios/1/metrics?start=not-a-date",
    "/alerts?severity=panic",
    "/alerts?tag=%00",
    "/alerts?source=" + "s" * 200,
    "/alerts/0/ack",
    "/nope",
]

HOSTILE_KEYS = [
    None,
    "",
    "x",
    "ak_000000000000." + "a" * 43,
    ("ak_000000000000.\u00e9" + "a" * 42).encode("latin-1"),
    "a" * 10_000,
]


async def test_hostile_requests_never_get_a_5xx(client, real_db):
    admin = await key_for(client, real_db, "admin", "admin")
    pid = (await client.post("/portfolios", json={"name": "P"}, headers=admin)).json()["id"]
    aid = (
        await client.post(
            "/alerts",
            json={"title": "t", "message": "m", "severity": "info", "source": "s"},
            headers=admin,
        )
    ).json()["id"]
    metrics_ready = hasattr(MetricsRepository, "range")
    rng = random.Random(20240607)
    bodies = HOSTILE_BODIES + [json.dumps(random_json(rng)).encode() for _ in range(60)]

    async def check(method, path, **kw):
        if "/metrics" in path and not metrics_ready:
            return
        r = await client.request(method, path, **kw)
        assert r.status_code < 500, (method, path, kw, r.status_code, r.text)
        if r.status_code >= 400 and r.headers.get("content-type") == "application/json":
            assert set(r.json()) == {"error", "detail"}, r.text

    headers = {**admin, "content-type": "application/json"}
    for method, template in WRITE_PATHS:
        path = template.format(pid=pid, aid=aid)
        for body in bodies:
            await check(method, path, content=body, headers=headers)
        for raw_key in HOSTILE_KEYS:
            key_headers = {} if raw_key is None else {"X-API-Key": raw_key}
            await check(method, path, json={"name": "x"}, headers=key_headers)
    for path in READ_PATHS:
        await check("GET", path)
    for raw_key in HOSTILE_KEYS[1:]:
        await check("GET", "/me", headers={"X-API-Key": raw_key})

    async with real_db.unit_of_work(read_only=True) as uow:
        total = (await uow.session.execute(select(func.count()).select_from(User))).scalar_one()
    assert total >= 1
