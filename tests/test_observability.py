"""Observability: db.stats(), operation logs, slow-query log, pool waits, health, Prometheus."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from alpha_data import Database, Settings
from alpha_data.errors import (
    AuthenticationError,
    ConflictError,
    DatabaseUnavailableError,
    InvalidDataError,
    NotFoundError,
    TransientError,
)
from alpha_data.models import User
from alpha_data.observability import (
    JsonFormatter,
    Stats,
    set_metrics_enabled,
)
from alpha_data.observability.logs import record_fields
from alpha_data.observability.sqlhooks import ObservedPool
from alpha_data.services import (
    authenticate,
    authenticate_api_key,
    create_portfolio,
    create_user,
    get_cached_portfolio,
    issue_api_key,
    record_trade,
)


def _settings(settings: Settings, **changes: Any) -> Settings:
    """A validated copy of the test's settings."""
    data = settings.model_dump()
    data.update(changes)
    return Settings(**data, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def fresh_db(real_db: Database, settings: Settings) -> AsyncIterator[Database]:
    """A second Database on the real pool (tables truncated by ``real_db`` afterwards)."""
    database = Database(settings)
    try:
        yield database
    finally:
        await database.close()


def _user(name: str) -> User:
    return User(username=name, email=f"{name}@x.io", password_hash="x")


# -- db.stats() --------------------------------------------------------------------


async def test_stats_counts_units_of_work_by_outcome(db: Database) -> None:
    before = db.stats()
    assert isinstance(before, Stats)
    async with db.unit_of_work() as uow:
        await uow.users.add(_user("stats_committed"))
        await uow.commit()
    async with db.unit_of_work() as uow:
        await uow.users.add(_user("stats_rolled_back"))
    async with db.unit_of_work(read_only=True) as uow:
        await uow.users.count()
    with pytest.raises(NotFoundError):
        async with db.unit_of_work(read_only=True) as uow:
            await uow.users.get_one(987_654_321)
    with pytest.raises(ConflictError):
        async with db.unit_of_work() as uow:
            await uow.users.add(_user("stats_committed"))
            await uow.commit()

    after = db.stats()
    assert after.uows.committed == before.uows.committed + 1
    assert after.uows.rolled_back == before.uows.rolled_back + 1
    assert after.uows.read_only == before.uows.read_only + 1
    assert after.uows.failed_by_error["NotFoundError"] == 1
    assert after.uows.failed_by_error["ConflictError"] == 1
    assert after.uows.failed == before.uows.failed + 2
    assert after.statements.count >= before.statements.count + 5
    assert after.statements.slow == 0
    # a snapshot is immutable and does not move afterwards
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.uows.committed = 0  # type: ignore[misc]
    async with db.unit_of_work() as uow:
        await uow.commit()
    assert after.uows.committed == before.uows.committed + 1
    assert after.uows.failed_by_error == {"NotFoundError": 1, "ConflictError": 1}
    json.dumps(after.as_dict())  # plain data


async def test_stats_reuse_cache_and_event_counters(db: Database) -> None:
    async with db.unit_of_work() as uow:
        user = await uow.users.add(_user("stats_cache"))
        await uow.commit()
    for _ in range(2):
        async with db.unit_of_work(read_only=True) as uow:
            await uow.users.get(user.id)
        await db.cache.drain()
    stats = db.stats()
    assert stats.cache == db.cache.stats()
    assert stats.cache.hits >= 1 and stats.cache.misses >= 1
    assert stats.events.published == db.events.published
    assert stats.events.failed == db.events.failed


async def test_statements_are_counted_per_unit_of_work(db: Database) -> None:
    async with db.unit_of_work(read_only=True) as one:
        await one.session.execute(text("SELECT 1"))
    async with db.unit_of_work(read_only=True) as uow:
        await uow.session.execute(text("SELECT 1"))
        await uow.session.execute(text("SELECT 2"))
        # concurrent tasks started inside the block count for it too
        await asyncio.gather(asyncio.ensure_future(uow.session.execute(text("SELECT 3"))))
    # (the test fixture adds a SAVEPOINT to each)
    assert uow.statements == one.statements + 2
    async with db.unit_of_work(read_only=True) as other:
        assert other.statements == 0


async def test_metrics_can_be_switched_off(db: Database) -> None:
    set_metrics_enabled(db, False)
    try:
        before = db.stats()
        async with db.unit_of_work(read_only=True) as uow:
            await uow.session.execute(text("SELECT 1"))
        assert db.stats().uows == before.uows
        assert db.stats().statements == before.statements
    finally:
        set_metrics_enabled(db, True)
    async with db.unit_of_work(read_only=True) as uow:
        await uow.session.execute(text("SELECT 1"))
    assert db.stats().statements.count > before.statements.count
    assert db.stats().uows.read_only == before.uows.read_only + 1


# -- logs ------------------------------------------------------------------------------


async def test_each_unit_of_work_logs_one_debug_line(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="alpha_data.uow")
    async with db.unit_of_work() as uow:
        await uow.users.add(_user("logged"))
        await uow.commit()
    with pytest.raises(NotFoundError):
        async with db.unit_of_work(read_only=True) as uow:
            await uow.users.get_one(987_654_321)
    lines = [r for r in caplog.records if r.name == "alpha_data.uow"]
    assert len(lines) == 2
    ok, failed = (record_fields(r) for r in lines)
    assert ok["outcome"] == "committed" and ok["error"] is None
    assert ok["statements"] >= 1 and ok["duration_ms"] > 0
    assert ok["attempt"] == 1 and ok["retries"] == 0 and ok["read_only"] is False
    assert failed["outcome"] == "failed" and failed["error"] == "NotFoundError"
    assert all(r.levelno == logging.DEBUG for r in lines)
    assert "committed" in lines[0].getMessage()


async def test_no_debug_work_when_debug_is_off(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alpha_data")
    async with db.unit_of_work(read_only=True) as uow:
        await uow.session.execute(text("SELECT 1"))
    assert not [r for r in caplog.records if r.name.startswith("alpha_data")]


async def test_slow_statements_log_sql_and_duration_never_parameters(
    fresh_db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="alpha_data.sql")
    db = Database(_settings(settings, slow_query_ms=40))
    try:
        async with db.unit_of_work(read_only=True) as uow:
            await uow.session.execute(text("SELECT 1"))
            await uow.session.execute(
                text("SELECT pg_sleep(0.06), :needle AS x"), {"needle": "needle-param-7731"}
            )
        slow = [r for r in caplog.records if r.name == "alpha_data.sql"]
        assert len(slow) == 1
        (record,) = slow
        extra = record_fields(record)
        assert record.levelno == logging.WARNING
        assert "pg_sleep" in extra["sql"] and "pg_sleep" in record.getMessage()
        assert extra["duration_ms"] >= 60 and extra["threshold_ms"] == 40
        assert extra["error"] is None
        assert "needle-param-7731" not in _everything(record)
        assert db.stats().statements.slow == 1

        # a statement cancelled by statement_timeout is slow too, and says why it ended
        with pytest.raises(TransientError):
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("SET LOCAL statement_timeout = 60"))
                await uow.session.execute(text("SELECT pg_sleep(2)"))
        failed = [r for r in caplog.records if r.name == "alpha_data.sql"][1:]
        assert len(failed) == 1
        assert record_fields(failed[0])["error"] == "QueryCanceledError"
        assert record_fields(failed[0])["sqlstate"] == "57014"
        assert "failed with" in failed[0].getMessage()
        assert db.stats().statements.slow == 2
    finally:
        await db.close()


async def test_retries_log_attempt_sqlstate_and_backoff(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alpha_data.database")
    calls = 0

    async def flaky(uow: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransientError("deadlock detected", sqlstate="40P01")
        return "done"

    before = db.stats().uows
    assert await db.run(flaky) == "done"
    (record,) = [r for r in caplog.records if r.name == "alpha_data.database"]
    extra = record_fields(record)
    assert extra["attempt"] == 1 and extra["attempts"] == 3
    assert extra["sqlstate"] == "40P01" and extra["error"] == "TransientError"
    assert 0 <= extra["backoff_s"] <= 2.0
    assert "40P01" in record.getMessage()
    after = db.stats().uows
    assert after.retried == before.retried + 1
    assert after.committed == before.committed + 1
    assert after.failed_by_error.get("TransientError", 0) == 1

    async def always(uow: Any) -> None:
        raise TransientError("serialization failure", sqlstate="40001")

    with pytest.raises(TransientError, match="gave up after 2 attempts"):
        await db.run(always, attempts=2)
    gave_up = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(gave_up) == 1 and record_fields(gave_up[0])["attempts"] == 2
    assert db.stats().uows.retried == before.retried + 2


# -- pool --------------------------------------------------------------------------------


async def test_pool_waits_and_timeouts_are_counted_and_logged(
    fresh_db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="alpha_data.pool")
    db = Database(_settings(settings, pool_size=1, max_overflow=0, pool_timeout=0.2))
    try:
        assert isinstance(db.engine.pool, ObservedPool)
        async with db.engine.connect() as held:
            await held.execute(text("SELECT 1"))
            assert db.stats().pool.checked_out == 1
            with pytest.raises(TransientError, match="pool"):
                async with db.unit_of_work() as uow:  # read-only ones have a pool of their own
                    await uow.session.execute(text("SELECT 1"))
        stats = db.stats().pool
        assert stats.waits == 1 and stats.timeouts == 1
        assert stats.wait_seconds >= 0.15 and stats.size == 1 and stats.checked_out == 0
        (warning,) = [r for r in caplog.records if r.name == "alpha_data.pool"]
        assert "exhausted" in warning.getMessage()
        assert db.stats().uows.failed_by_error == {"TransientError": 1}

        # a wait that gets its connection is a wait, not a timeout
        async def release_soon() -> None:
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                await asyncio.sleep(0.05)

        holder = asyncio.ensure_future(release_soon())
        await asyncio.sleep(0.02)
        async with db.unit_of_work() as uow:
            await uow.session.execute(text("SELECT 1"))
        await holder
        assert db.stats().pool.waits == 2 and db.stats().pool.timeouts == 1

        await db.engine.dispose()  # a recreated pool keeps counting
        assert isinstance(db.engine.pool, ObservedPool)
        assert db.engine.pool.counters is db.counters
    finally:
        await db.close()


# -- health ------------------------------------------------------------------------------


async def test_health_reports_pool_and_replicas(real_db: Database, settings: Settings) -> None:
    health = await real_db.health()
    assert {"size", "checkedout", "overflow", "max_overflow", "waits", "timeouts"} <= set(
        health.pool
    )
    assert health.replicas == {}

    ghost = "postgresql+asyncpg://ghost:replica-pw-5521@127.0.0.1:1/nope"
    db = Database(_settings(settings, replica_urls=[settings.database_url, ghost]))
    try:
        health = await db.health()
        assert health.status == "degraded" and health.ok
        up = health.replicas[_where(settings.database_url)]
        assert up.ok and up.detail["in_recovery"] is False  # the primary posing as a replica
        down = health.replicas["127.0.0.1:1/nope"]
        assert not down.ok and "cannot reach replica at 127.0.0.1:1/nope" in (down.error or "")
        assert "replica-pw-5521" not in repr(health)
    finally:
        await db.close()


def _where(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host}:{parsed.port or 5432}/{parsed.database}"


def test_cli_health_prints_pool_detail_and_exits_nonzero_when_down(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from alpha_data.cli import app

    monkeypatch.setenv("ALPHA_DATA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ALPHA_DATA_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("ALPHA_DATA_CACHE_PREFIX", settings.cache_prefix)
    runner = CliRunner()
    result = runner.invoke(app, ["health"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "waits 0" in result.output and "timeouts 0" in result.output
    assert "overall: ok" in result.output

    monkeypatch.setenv(
        "ALPHA_DATA_DATABASE_URL", "postgresql+asyncpg://u:cli-pw-8812@127.0.0.1:1/x"
    )
    monkeypatch.setenv("ALPHA_DATA_CONNECT_TIMEOUT", "1")
    result = runner.invoke(app, ["health"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "overall: down" in result.output and "cli-pw-8812" not in result.output


# -- nothing secret leaves the process -----------------------------------------------


def _everything(record: logging.LogRecord) -> str:
    """All text a handler could emit for ``record``: message, args, extras, traceback."""
    parts = [record.getMessage(), repr(record.args), repr(record.msg)]
    parts += [f"{k}={v!r}" for k, v in record_fields(record).items()]
    parts.append(logging.Formatter().format(record))
    parts.append(JsonFormatter().format(record))
    return "\n".join(parts)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)  # every logger: alpha_data, redis, asyncio, ...
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # SQL echo, pool events
    yield caplog


async def test_logs_never_hold_passwords_keys_hashes_or_url_passwords(
    real_db: Database, settings: Settings, all_logs: pytest.LogCaptureFixture
) -> None:
    url_password = "urlpw-Zq81x"
    redis_password = "redispw-Kk20v"
    password = "Correct-Horse-Battery-9431"
    url = make_url(settings.database_url).set(password=url_password)
    db = Database(
        _settings(
            settings,
            database_url=url.render_as_string(hide_password=False),
            slow_query_ms=0,  # every statement goes to the slow-query log
        )
    )
    secrets: list[str] = [url_password, redis_password, password]
    try:
        await db.connect()
        user = await create_user(db, username="leaky", email="leaky@x.io", password=password)
        await authenticate(db, username="leaky", password=password)
        with pytest.raises(AuthenticationError):
            await authenticate(db, username="leaky", password=password + "-wrong")
        _, raw = await issue_api_key(db, user_id=user.id, name="ci", permissions=["*"])
        prefix, secret = raw.split(".", 1)
        secrets += [raw, secret]
        await authenticate_api_key(db, raw, permission="trades:write")
        with pytest.raises(AuthenticationError):
            await authenticate_api_key(db, f"{prefix}.{'x' * len(secret)}")
        async with db.unit_of_work(read_only=True) as uow:
            stored = await uow.users.get_for_auth("leaky")
            assert stored is not None
            secrets.append(stored.password_hash)
            api_key = await uow.api_keys.get_by_prefix(prefix)
            assert api_key is not None
            secrets.append(api_key.key_hash)

        portfolio = await create_portfolio(db, name="leaky book")
        for side, quantity in (("buy", "3"), ("sell", "1")):
            await record_trade(
                db,
                portfolio_id=portfolio.id,
                symbol="MSFT",
                side=side,
                quantity=Decimal(quantity),
                price=Decimal("410.5"),
            )
        for _ in range(2):
            await get_cached_portfolio(db, portfolio.id)
            await db.cache.drain()
            async with db.unit_of_work(read_only=True) as uow:
                await uow.users.get_by_username("leaky")
        with pytest.raises(InvalidDataError):
            await record_trade(
                db,
                portfolio_id=portfolio.id,
                symbol="MSFT",
                side="sell",
                quantity=Decimal("99"),
                price=Decimal("1"),
            )
        with pytest.raises(ConflictError):
            await create_user(db, username="leaky", email="other@x.io", password=password)

        calls = 0

        async def flaky(uow: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise TransientError("serialization failure", sqlstate="40001")

        await db.run(flaky)
    finally:
        await db.close()

    # a cache behind a password that is down: fail-open warnings
    broken = Database(
        _settings(settings, redis_url=f"redis://:{redis_password}@127.0.0.1:1/0", slow_query_ms=0)
    )
    try:
        await broken.connect()
        async with broken.unit_of_work(read_only=True) as uow:
            await uow.users.get_by_username("leaky")
        assert "redis" not in repr(broken).lower() or redis_password not in repr(broken)
    finally:
        await broken.close()

    # a database that cannot be reached, with a password in its URL
    unreachable = make_url(settings.database_url).set(port=1, password=url_password)
    gone = Database(
        _settings(
            settings,
            database_url=unreachable.render_as_string(hide_password=False),
            connect_timeout=1,
        )
    )
    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            await gone.connect()
        assert url_password not in str(raised.value)
        assert url_password not in repr(gone)
        assert url_password not in repr(await gone.health())
    finally:
        await gone.close()

    records = all_logs.records
    import collections

    print(collections.Counter(r.name for r in records))
    print(
        [
            r.getMessage()[:150]
            for r in records
            if r.name in ("alpha_data.cache", "alpha_data.database", "alpha_data.services.users")
        ]
    )
    names = {r.name for r in records}
    # the scenario did log: unit-of-work lines, every statement, the retry, the cache outage
    assert {"alpha_data.uow", "alpha_data.sql", "alpha_data.database", "alpha_data.cache"} <= names
    assert any("INSERT INTO users" in r.getMessage() for r in records if r.name == "alpha_data.sql")
    assert any("INSERT INTO api_keys" in r.getMessage() for r in records)
    assert len(records) > 50
    for record in records:
        emitted = _everything(record)
        for secret in secrets:
            assert secret not in emitted, f"{record.name}: {record.getMessage()[:200]}"


# -- logger layout ------------------------------------------------------------------------


def test_loggers_live_under_alpha_data_and_have_no_handlers() -> None:
    import importlib
    import pkgutil

    import alpha_data

    for module in pkgutil.walk_packages(alpha_data.__path__, "alpha_data."):
        if module.name.startswith(("alpha_data.integrations.", "alpha_data.cli")):
            continue  # optional dependencies
        importlib.import_module(module.name)
    ours = [
        logging.getLogger(name)
        for name in logging.root.manager.loggerDict
        if name.startswith("alpha_data")
    ]
    assert ours
    assert all(not logger.handlers for logger in ours)


def test_json_formatter_ships_extra_fields() -> None:
    record = logging.LogRecord("alpha_data.uow", logging.DEBUG, __file__, 1, "hi %s", ("x",), None)
    for key, value in {"outcome": "committed", "duration_ms": 1.5}.items():
        setattr(record, key, value)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hi x" and line["outcome"] == "committed"
    assert line["duration_ms"] == 1.5 and line["logger"] == "alpha_data.uow"


# -- Prometheus ----------------------------------------------------------------------------


async def test_prometheus_collector_exposes_the_stats(db: Database) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from alpha_data.integrations.prometheus import exposition, register, unregister

    registry = prometheus_client.CollectorRegistry()
    collector = register(db, registry, labels={"database": "primary"})
    async with db.unit_of_work() as uow:
        await uow.users.add(_user("scraped"))
        await uow.commit()
    with pytest.raises(NotFoundError):
        async with db.unit_of_work(read_only=True) as uow:
            await uow.users.get_one(987_654_321)
    stats = db.stats()
    body, content_type = exposition(registry)
    text_body = body.decode()
    assert content_type.startswith("text/plain")

    def sample(name: str, **labels: str) -> float | None:
        value = registry.get_sample_value(name, {"database": "primary", **labels})
        return None if value is None else float(value)

    assert sample("alpha_data_uow_total", outcome="committed") == stats.uows.committed
    assert sample("alpha_data_uow_failed_total", error="NotFoundError") == 1
    assert sample("alpha_data_statements_total") == stats.statements.count
    assert sample("alpha_data_pool_size") == stats.pool.size
    assert sample("alpha_data_pool_waits_total") == 0
    assert sample("alpha_data_cache_hits_total") == stats.cache.hits
    assert sample("alpha_data_cache_invalidations_total") == stats.cache.invalidations
    assert sample("alpha_data_cache_pending_invalidations") == 0
    assert sample("alpha_data_events_published_total") == stats.events.published
    assert "# TYPE alpha_data_slow_statements_total counter" in text_body
    unregister(collector, registry)
    assert registry.get_sample_value("alpha_data_pool_size", {"database": "primary"}) is None


async def test_fastapi_serves_metrics(db: Database) -> None:
    pytest.importorskip("prometheus_client")
    pytest.importorskip("fastapi")
    import httpx
    from fastapi import FastAPI

    from alpha_data.integrations.fastapi import add_metrics_route, install
    from examples.api import create_app

    app = FastAPI()
    assert add_metrics_route(app) is True
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        empty = await client.get("/metrics")  # no Database yet: only the default registry
        assert empty.status_code == 200 and "alpha_data_uow_total" not in empty.text
        install(app, db)
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "alpha_data_statements_total" in response.text
    assert "alpha_data_pool_checked_out" in response.text

    example = create_app(database=db)
    assert "/metrics" in {getattr(r, "path", None) for r in example.routes}
