"""ensure/stop/status/clean of the embedded PostgreSQL + Redis pair (synchronous, no asyncio).

``ensure_servers()`` is what the CLI and the pytest plugin call: it initialises the data
directory on first use, starts whatever is not running (a crashed run's stale files are
cleared first), and returns the URLs. Servers keep running after the caller exits, so the next
call is instant; ``stop_servers()`` stops them, ``clean_servers()`` also deletes the data.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from alpha_data.embedded import postgres, redis_server
from alpha_data.embedded.binaries import pg_bin_dir, redis_server_binary, version_of
from alpha_data.embedded.layout import Layout, default_data_dir, locked

__all__ = [
    "DEFAULT_DATABASE",
    "EmbeddedServers",
    "EmbeddedStatus",
    "clean_servers",
    "ensure_servers",
    "server_status",
    "stop_servers",
]

DEFAULT_DATABASE = "alpha_data"


@dataclass(frozen=True)
class EmbeddedServers:
    """Running embedded servers and how they were reached.

    ``postgres_action`` / ``redis_action``: ``initialized`` (initdb + start), ``started``
    (warm start of a kept data directory) or ``running`` (already up: nothing done).
    ``init_seconds`` and ``warm_start_seconds`` are the last measured ones (kept in state.json),
    ``seconds`` what this call took.
    """

    data_dir: Path
    database_url: str
    server_url: str
    redis_url: str
    postgres_version: str
    redis_version: str
    postgres_action: str
    redis_action: str
    seconds: float
    init_seconds: float | None
    warm_start_seconds: float | None

    @property
    def started(self) -> bool:
        """Whether this call started anything (a caller may stop what it started)."""
        return self.postgres_action != "running" or self.redis_action != "running"

    def url_for(self, database: str) -> str:
        """The postgresql+asyncpg URL of ``database`` on the embedded server."""
        return _pg_url(Layout(self.data_dir), database)


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``alpha-data embedded status`` shows."""

    data_dir: Path
    initialized: bool
    postgres_pid: int | None
    redis_pid: int | None
    database_url: str
    redis_url: str
    init_seconds: float | None
    warm_start_seconds: float | None


def _pg_url(layout: Layout, database: str) -> str:
    host = quote(str(layout.socket_dir), safe="")
    return f"postgresql+asyncpg://postgres@/{quote(database, safe='')}?host={host}"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def ensure_servers(data_dir: Path | str | None = None) -> EmbeddedServers:
    """Start (initialising on first use) the embedded PostgreSQL and Redis; their URLs.

    Safe from several processes at once (one waits on the directory's lock) and after a crash.
    Raises ``EmbeddedServerError`` with a one-line reason when a server cannot start.
    """
    layout = Layout(Path(data_dir).resolve() if data_dir else default_data_dir())
    began = time.perf_counter()
    with locked(layout):
        pg_action = redis_action = "running"
        if not postgres.is_initialized(layout):
            layout.update_state(
                init_seconds=postgres.init(layout) + postgres.start(layout),
                initialized_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            pg_action = "initialized"
        elif postgres.running_pid(layout) is None:
            layout.update_state(warm_start_seconds=postgres.start(layout))
            pg_action = "started"
        if redis_server.running_pid(layout) is None:
            layout.update_state(redis_start_seconds=redis_server.start(layout))
            redis_action = "started"
        state = layout.read_state()
        if "postgres_version" not in state or pg_action == "initialized":
            layout.update_state(postgres_version=version_of(pg_bin_dir() / "postgres"))
        if "redis_version" not in state or redis_action == "started":
            layout.update_state(redis_version=version_of(redis_server_binary()))
        state = layout.read_state()
    return EmbeddedServers(
        data_dir=layout.root,
        database_url=_pg_url(layout, DEFAULT_DATABASE),
        server_url=_pg_url(layout, "postgres"),
        redis_url=redis_server.url(layout),
        postgres_version=str(state.get("postgres_version", "unknown")),
        redis_version=str(state.get("redis_version", "unknown")),
        postgres_action=pg_action,
        redis_action=redis_action,
        seconds=time.perf_counter() - began,
        init_seconds=_number(state.get("init_seconds")),
        warm_start_seconds=_number(state.get("warm_start_seconds")),
    )


def server_status(data_dir: Path | str | None = None) -> EmbeddedStatus:
    """Which embedded servers run (read-only: takes no lock, starts nothing)."""
    layout = Layout(Path(data_dir).resolve() if data_dir else default_data_dir())
    state = layout.read_state()
    return EmbeddedStatus(
        data_dir=layout.root,
        initialized=postgres.is_initialized(layout),
        postgres_pid=postgres.running_pid(layout),
        redis_pid=redis_server.running_pid(layout),
        database_url=_pg_url(layout, DEFAULT_DATABASE),
        redis_url=redis_server.url(layout),
        init_seconds=_number(state.get("init_seconds")),
        warm_start_seconds=_number(state.get("warm_start_seconds")),
    )


def stop_servers(data_dir: Path | str | None = None) -> tuple[bool, bool]:
    """Stop both servers; (postgres_was_running, redis_was_running). Data is kept."""
    layout = Layout(Path(data_dir).resolve() if data_dir else default_data_dir())
    if not layout.root.exists():
        return False, False
    with locked(layout):
        pg_stopped = postgres.stop(layout) if postgres.is_initialized(layout) else False
        return pg_stopped, redis_server.stop(layout)


def clean_servers(data_dir: Path | str | None = None) -> bool:
    """Stop both servers and delete what they keep; False when there was nothing.

    Only the entries this package creates are deleted (a mistyped ``ALPHA_DATA_EMBEDDED_DIR``
    never costs other files); the directory itself goes when nothing else is left in it.
    """
    layout = Layout(Path(data_dir).resolve() if data_dir else default_data_dir())
    ours = [layout.pgdata, layout.pgdata_init, layout.pg_log, layout.redis_dir, layout.state_file]
    if not layout.root.exists() or not any(p.exists() for p in [*ours, layout.lock_file]):
        return False
    with locked(layout):
        if postgres.is_initialized(layout):
            postgres.stop(layout)
        redis_server.stop(layout)
        for path in [*ours, layout.socket_dir, layout.state_file.with_suffix(".tmp")]:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    layout.lock_file.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else lives there: leave it
        layout.root.rmdir()
    return True
