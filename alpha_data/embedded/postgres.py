"""The embedded PostgreSQL: initdb once, start, stop, status and stale-file recovery.

The server listens only on a Unix socket in a 0700 directory (``listen_addresses = ''``), so
only this user can connect (trust auth); no TCP port can clash or be reached by other users.
Every step runs under the data directory's lock (``layout.locked``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from alpha_data.embedded.binaries import pg_bin_dir, pg_command, process_matches
from alpha_data.embedded.errors import EmbeddedServerError
from alpha_data.embedded.layout import Layout

__all__ = ["init", "is_initialized", "running_pid", "start", "stop"]

_CONF = "alpha_data.conf"


def _quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


def _run(args: list[str], what: str, log: Path | None = None, timeout: float = 120) -> None:
    try:
        done = subprocess.run(  # noqa: S603 - our binaries, argument list (no shell)
            pg_command(args), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise EmbeddedServerError(f"embedded PostgreSQL: {what} timed out") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        where = f"; see {log}" if log else ""
        raise EmbeddedServerError(f"embedded PostgreSQL: {what} failed: {detail[0]}{where}")


def is_initialized(layout: Layout) -> bool:
    return (layout.pgdata / "PG_VERSION").is_file()


def init(layout: Layout) -> float:
    """initdb into ``postgres.init/`` and rename it to ``postgres/``; seconds taken.

    A run that dies half-way leaves only ``postgres.init/``, removed by the next attempt.
    """
    started = time.perf_counter()
    shutil.rmtree(layout.pgdata_init, ignore_errors=True)
    bin_dir = pg_bin_dir()
    _run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(layout.pgdata_init),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--no-instructions",
        ],
        "initdb",
    )
    conf = layout.pgdata_init / "postgresql.conf"
    with conf.open("a") as out:
        out.write(f"\n# added by alpha_data.embedded\ninclude_if_exists = {_quote(_CONF)}\n")
    layout.pgdata_init.replace(layout.pgdata)
    return time.perf_counter() - started


def _write_conf(layout: Layout) -> None:
    """Settings rewritten at each start: where the socket lives, no TCP listener."""
    socket_dir = layout.make_socket_dir()
    (layout.pgdata / _CONF).write_text(
        "listen_addresses = ''\n"
        f"unix_socket_directories = {_quote(str(socket_dir))}\n"
        "unix_socket_permissions = 0700\n"
        "port = 5432\n"
        "synchronous_commit = off\n"  # dev/test speed; a crash loses no consistency
        "max_connections = 200\n"
    )


def _postmaster(layout: Layout) -> tuple[int, str] | None:
    """(pid, status) from postmaster.pid, or None when absent or unreadable."""
    try:
        lines = (layout.pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), (lines[7].strip() if len(lines) > 7 else "starting")
    except (OSError, ValueError, IndexError):
        return None


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False


def running_pid(layout: Layout) -> int | None:
    """The pid of our running, ready server, else None."""
    info = _postmaster(layout)
    if info is None or not process_matches(info[0], str(layout.pgdata)):
        return None
    return info[0] if info[1] == "ready" and _answers(layout.pg_socket) else None


def _clear_stale(layout: Layout) -> None:
    """Remove a postmaster.pid and socket lock whose process is gone (or is not ours)."""
    info = _postmaster(layout)
    if info is not None and process_matches(info[0], str(layout.pgdata)):
        return  # a live server of ours (maybe starting or stopping): postgres decides
    (layout.pgdata / "postmaster.pid").unlink(missing_ok=True)
    for leftover in (layout.pg_socket, layout.pg_socket.with_name(layout.pg_socket.name + ".lock")):
        leftover.unlink(missing_ok=True)


def _settle(layout: Layout, wait: float = 15.0) -> bool:
    """A live server of ours that does not answer: wait for its start-up (crash recovery),
    else stop it (e.g. its socket was deleted by a tmp cleaner). True when it became ready."""
    deadline = time.monotonic() + wait
    while (info := _postmaster(layout)) is not None and process_matches(
        info[0], str(layout.pgdata)
    ):
        if running_pid(layout) is not None:
            return True
        if time.monotonic() > deadline:
            stop(layout)
            return False
        time.sleep(0.1)
    return False


def start(layout: Layout, attempts: int = 3) -> float:
    """Start the server (waits until it accepts connections); seconds taken."""
    started = time.perf_counter()
    if _settle(layout):
        return time.perf_counter() - started
    for attempt in range(attempts):
        _clear_stale(layout)
        _write_conf(layout)
        try:
            _run(
                [
                    str(pg_bin_dir() / "pg_ctl"),
                    "-D",
                    str(layout.pgdata),
                    "-l",
                    str(layout.pg_log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                "start",
                log=layout.pg_log,
            )
            break
        except EmbeddedServerError:
            # e.g. backends of a killed postmaster still hold its shared memory for a moment
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
    if running_pid(layout) is None:
        raise EmbeddedServerError(f"embedded PostgreSQL did not become ready; see {layout.pg_log}")
    return time.perf_counter() - started


def stop(layout: Layout) -> bool:
    """Fast shutdown (open sessions are disconnected); False when it was not running."""
    info = _postmaster(layout)
    if info is None or not process_matches(info[0], str(layout.pgdata)):
        _clear_stale(layout)
        return False
    _run(
        [str(pg_bin_dir() / "pg_ctl"), "-D", str(layout.pgdata), "-m", "fast", "-w", "stop"],
        "stop",
        log=layout.pg_log,
    )
    return True
