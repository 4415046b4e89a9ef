"""The embedded PostgreSQL + Redis: life cycle, crash recovery and every capability on them.

Each test module run uses its own embedded data directory (a warm start after the first),
so these tests never touch the shared servers nor a developer's default embedded directory.
Skipped when the ``embedded`` extra is not installed.
"""

from __future__ import annotations

import asyncio
import io
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis_asyncio
from alembic import command
from sqlalchemy.engine import make_url

from alpha_data import Settings
from alpha_data.cli.fallback import embedded_settings, wants_embedded
from alpha_data.embedded import (
    EmbeddedServerError,
    EmbeddedServers,
    clean_servers,
    ensure_servers,
    server_answers,
    server_status,
    stop_servers,
)
from alpha_data.embedded.binaries import pg_bin_dir, process_matches, redis_server_binary
from tests.support import alembic_config

try:
    pg_bin_dir()
    redis_server_binary()
except EmbeddedServerError as exc:  # pragma: no cover - depends on the installed extras
    pytest.skip(f"embedded servers unavailable: {exc.message}", allow_module_level=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("embedded") / "data"
    yield path
    clean_servers(path)


@pytest.fixture(scope="module")
def servers(data_dir: Path) -> EmbeddedServers:
    return ensure_servers(data_dir)


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture
async def scratch_db(servers: EmbeddedServers) -> AsyncIterator[str]:
    """A fresh database on the embedded server (its postgresql+asyncpg URL), dropped after."""
    name = f"emb_{os.getpid()}_{time.monotonic_ns()}"
    admin = await asyncpg.connect(_dsn(servers.server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield servers.url_for(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# --- life cycle -------------------------------------------------------------------------


def test_first_start_initialises_then_reuses_the_running_servers(servers: EmbeddedServers) -> None:
    assert servers.postgres_action == "initialized"
    assert servers.init_seconds is not None
    again = ensure_servers(servers.data_dir)
    assert (again.postgres_action, again.redis_action) == ("running", "running")
    assert not again.started
    assert again.database_url == servers.database_url
    assert servers.postgres_version.split(".")[0] >= "16"
    major, minor = (int(p) for p in servers.redis_version.split(".")[:2])
    assert (major, minor) >= (6, 2)  # Streams with XAUTOCLAIM


def test_stop_keeps_data_and_warm_start_measures(servers: EmbeddedServers) -> None:
    async def mark() -> None:
        conn = await asyncpg.connect(_dsn(servers.server_url))
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (v int); INSERT INTO kept VALUES (7)")
        await conn.close()

    asyncio.run(mark())
    assert stop_servers(servers.data_dir) == (True, True)
    status = server_status(servers.data_dir)
    assert (status.postgres_pid, status.redis_pid) == (None, None)
    assert not server_answers(servers.server_url)
    warm = ensure_servers(servers.data_dir)
    assert (warm.postgres_action, warm.redis_action) == ("started", "started")
    assert warm.warm_start_seconds is not None

    async def read() -> list[int]:
        conn = await asyncpg.connect(_dsn(warm.server_url))
        try:
            return [r["v"] for r in await conn.fetch("SELECT v FROM kept")]
        finally:
            await conn.execute("DROP TABLE kept")
            await conn.close()

    assert asyncio.run(read()) == [7]


def test_deleted_sockets_are_recovered(servers: EmbeddedServers) -> None:
    socket_dir = Path(make_url(servers.server_url).query["host"])  # type: ignore[arg-type]
    old = server_status(servers.data_dir)
    for leftover in socket_dir.iterdir():  # what a tmp cleaner does to a long-running server
        leftover.unlink()
    back = ensure_servers(servers.data_dir)
    assert (back.postgres_action, back.redis_action) == ("started", "started")
    new = server_status(servers.data_dir)
    assert new.postgres_pid is not None and new.postgres_pid != old.postgres_pid
    assert old.redis_pid is not None and new.redis_pid != old.redis_pid
    deadline = time.monotonic() + 5
    while process_matches(old.redis_pid, "redis-server") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_matches(old.redis_pid, "redis-server")  # the unreachable one stopped


def test_killed_servers_and_a_stale_pidfile_are_recovered(servers: EmbeddedServers) -> None:
    status = server_status(servers.data_dir)
    assert status.postgres_pid is not None and status.redis_pid is not None
    os.kill(status.postgres_pid, signal.SIGKILL)
    os.kill(status.redis_pid, signal.SIGKILL)
    time.sleep(0.5)
    # the dead postmaster's pid now names a live process that is not ours (this one)
    pidfile = servers.data_dir / "postgres" / "postmaster.pid"
    lines = pidfile.read_text().splitlines()
    pidfile.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")
    recovered = ensure_servers(servers.data_dir)
    assert (recovered.postgres_action, recovered.redis_action) == ("started", "started")
    assert server_answers(recovered.server_url)


def test_racing_processes_share_one_server_and_redo_a_half_done_initdb(tmp_path: Path) -> None:
    data = tmp_path / ("long-" * 16) / "shared"  # too long for a socket path in data/run
    (data / "postgres.init").mkdir(parents=True)
    (data / "postgres.init" / "garbage").write_text("a run died during initdb")
    code = (
        "import sys; from alpha_data.embedded import ensure_servers; "
        "s = ensure_servers(sys.argv[1]); print(s.postgres_action, s.database_url)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(data)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=120)[0].split() for p in procs]
        assert all(p.returncode == 0 for p in procs)
        assert sorted(out[0] for out in outputs) == ["initialized", "running"]
        assert outputs[0][1] == outputs[1][1]
        assert not (data / "postgres.init").exists()
        socket_dir = Path(make_url(outputs[0][1]).query["host"])  # type: ignore[arg-type]
        assert not socket_dir.is_relative_to(data)
        assert socket_dir.stat().st_mode & 0o777 == 0o700
        (data / "notes.txt").write_text("not ours")
    finally:
        assert clean_servers(data)
    assert not socket_dir.exists()
    assert [p.name for p in data.iterdir()] == ["notes.txt"]  # only what it made is deleted
    assert not clean_servers(data)


def test_sockets_are_private_to_the_owner(servers: EmbeddedServers) -> None:
    socket_dir = Path(make_url(servers.server_url).query["host"])  # type: ignore[arg-type]
    assert socket_dir.stat().st_mode & 0o777 == 0o700


def test_cli_status_env_and_stop(servers: EmbeddedServers, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from alpha_data.cli import app

    monkeypatch.setenv("ALPHA_DATA_EMBEDDED_DIR", str(servers.data_dir))
    runner = CliRunner()
    status = runner.invoke(app, ["embedded", "status"])
    assert status.exit_code == 0, status.output
    assert "postgresql: running (pid" in status.output
    assert "redis: running (pid" in status.output
    printed = runner.invoke(app, ["embedded", "env"])
    lines = dict(line.split("=", 1) for line in printed.output.splitlines())
    assert shlex.split(lines["ALPHA_DATA_DATABASE_URL"]) == [servers.database_url]
    assert shlex.split(lines["ALPHA_DATA_TEST_SERVER_URL"]) == [servers.server_url]
    stopped = runner.invoke(app, ["embedded", "stop"])
    assert "postgresql: stopped; redis: stopped" in stopped.output
    assert "postgresql: stopped" in runner.invoke(app, ["embedded", "status"]).output
    assert ensure_servers(servers.data_dir).postgres_action == "started"


# --- the CLI's fallback decision -------------------------------------------------------


def test_fallback_only_when_nothing_is_configured_and_nothing_answers(
    monkeypatch: pytest.MonkeyPatch, servers: EmbeddedServers
) -> None:
    monkeypatch.delenv("ALPHA_DATA_EMBEDDED", raising=False)
    nowhere = "postgresql+asyncpg://postgres@127.0.0.1:1/alpha_data"
    configured = Settings(database_url=nowhere, _env_file=None)  # type: ignore[call-arg]
    assert wants_embedded(configured) is None  # a configured URL is never replaced
    unset = Settings(_env_file=None)  # type: ignore[call-arg]
    default_answers = server_answers(unset.database_url)
    assert (wants_embedded(unset) is None) == default_answers
    monkeypatch.setenv("ALPHA_DATA_EMBEDDED", "1")
    assert wants_embedded(configured) == ""  # asked for: no reason to print
    switched = embedded_settings(unset, servers.database_url, servers.redis_url)
    assert (switched.database_url, switched.redis_url) == (servers.database_url, servers.redis_url)
    kept = Settings(redis_url="memory://", _env_file=None)  # type: ignore[call-arg]
    assert embedded_settings(kept, servers.database_url, servers.redis_url).redis_url == (
        "memory://"
    )


# --- capabilities on the embedded server -----------------------------------------------


def test_migrations_round_trip_and_check(scratch_db: str) -> None:
    cfg = alembic_config(scratch_db)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    command.check(cfg)  # raises if the models and the migrated schema differ


async def test_postgres_capabilities(scratch_db: str) -> None:
    """COPY, partitions, FOR UPDATE SKIP LOCKED, advisory locks, LISTEN/NOTIFY, SQLSTATEs."""
    dsn = _dsn(scratch_db)
    a, b = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await a.execute(
            "CREATE TABLE m (t timestamptz NOT NULL, v int) PARTITION BY RANGE (t);"
            "CREATE TABLE m_2026 PARTITION OF m FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        )
        rows = io.BytesIO(b"2026-03-01 00:00:00+00\t1\n2026-04-01 00:00:00+00\t2\n")
        await a.copy_to_table("m", source=rows, columns=["t", "v"])
        assert await a.fetchval("SELECT count(*) FROM m_2026") == 2
        with pytest.raises(asyncpg.CheckViolationError):  # 23514: no partition for 2030
            await a.execute("INSERT INTO m VALUES ('2030-01-01', 3)")

        async with a.transaction():
            await a.fetch("SELECT * FROM m WHERE v = 1 FOR UPDATE")
            skipped = await b.fetch("SELECT v FROM m FOR UPDATE SKIP LOCKED")
            assert [r["v"] for r in skipped] == [2]
        assert await a.fetchval("SELECT pg_try_advisory_lock(42)")
        assert not await b.fetchval("SELECT pg_try_advisory_lock(42)")
        await a.execute("SELECT pg_advisory_unlock(42)")

        got: asyncio.Queue[str] = asyncio.Queue()
        await b.add_listener("chan", lambda *args: got.put_nowait(args[3]))
        await a.execute("SELECT pg_notify('chan', 'hello')")
        assert await asyncio.wait_for(got.get(), 5) == "hello"
    finally:
        await a.close()
        await b.close()


async def test_redis_streams_consumer_groups_and_autoclaim(servers: EmbeddedServers) -> None:
    client = redis_asyncio.Redis.from_url(servers.redis_url, decode_responses=True)
    key = f"emb:{os.getpid()}:stream"
    try:
        first = await client.xadd(key, {"event": "trade"})
        await client.xgroup_create(key, "relay", id="0")
        read = await client.xreadgroup("relay", "c1", {key: ">"}, count=10)
        assert read[0][1][0][0] == first
        # c1 died without ACK: c2 claims the idle delivery (XAUTOCLAIM, Redis >= 6.2)
        claimed = await client.xautoclaim(key, "relay", "c2", min_idle_time=0, start_id="0")
        assert [entry[0] for entry in claimed[1]] == [first]
        assert await client.xack(key, "relay", first) == 1
        assert (await client.xpending(key, "relay"))["pending"] == 0
    finally:
        await client.delete(key)
        await client.aclose()


def test_suite_runs_on_the_embedded_servers_when_nothing_else_can() -> None:
    """No test server configured and none answering (the nox session): the embedded pair."""
    forced = os.environ.get("ALPHA_DATA_TEST_EMBEDDED") == "1"
    configured = os.environ.get("ALPHA_DATA_TEST_SERVER_URL")
    if not forced and (configured or server_answers("postgresql://127.0.0.1:5432/postgres")):
        pytest.skip("a test server is configured or answers: the fixtures use it")
    from tests.support import REDIS_URL, SERVER_URL

    assert ensure_servers().server_url == SERVER_URL
    assert REDIS_URL.startswith("unix://")
