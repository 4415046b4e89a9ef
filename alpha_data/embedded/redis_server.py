"""The embedded Redis: a private ``redis-server`` on a Unix socket (0700), nothing on disk.

Like the machine's Redis, it keeps no data between restarts (``save ""``, no AOF): it is the
cache and the message bus, and the outbox in PostgreSQL re-delivers what matters.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from alpha_data.embedded.binaries import process_matches, redis_server_binary
from alpha_data.embedded.errors import EmbeddedServerError
from alpha_data.embedded.layout import Layout

__all__ = ["running_pid", "start", "stop", "url"]


def url(layout: Layout) -> str:
    return f"unix://{layout.redis_socket}?db=0"


def _quote(value: str) -> str:
    """A redis.conf string (double-quoted, backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pid(layout: Layout) -> int | None:
    try:
        return int((layout.redis_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _ping(layout: Layout) -> bool:
    client = redis.Redis(unix_socket_path=str(layout.redis_socket), socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def running_pid(layout: Layout) -> int | None:
    """The pid of our running Redis that answers PING, else None."""
    pid = _pid(layout)
    if pid is None or not process_matches(pid, "redis-server"):
        return None
    return pid if _ping(layout) else None


def _config(layout: Layout) -> Path:
    directory = layout.redis_dir
    conf = directory / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "port 0",
                f"unixsocket {_quote(str(layout.redis_socket))}",
                "unixsocketperm 700",
                "daemonize yes",
                f"pidfile {_quote(str(directory / 'redis.pid'))}",
                f"logfile {_quote(str(directory / 'redis.log'))}",
                f"dir {_quote(str(directory))}",
                'save ""',
                "appendonly no",
                "databases 16",
                "",
            ]
        )
    )
    return conf


def _end(pid: int, wait: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``wait`` s: gone before a new server writes its pidfile
    (an exiting Redis deletes the pidfile path, which would orphan its successor)."""
    deadline = time.monotonic() + wait
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        while process_matches(pid, "redis-server"):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)


def start(layout: Layout, timeout: float = 30) -> float:
    """Start redis-server (stale pidfile and socket removed first); seconds until PING."""
    started = time.perf_counter()
    layout.redis_dir.mkdir(parents=True, exist_ok=True)
    layout.make_socket_dir()
    orphan = _pid(layout)
    if orphan is not None and process_matches(orphan, "redis-server"):
        _end(orphan)  # ours but unreachable (its socket file is gone)
    (layout.redis_dir / "redis.pid").unlink(missing_ok=True)
    layout.redis_socket.unlink(missing_ok=True)
    binary = redis_server_binary()
    done = subprocess.run(  # noqa: S603 - our binary, our config file
        [str(binary), str(_config(layout))], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise EmbeddedServerError(
            f"embedded Redis ({binary}) did not start; see {layout.redis_dir / 'redis.log'}"
        )
    deadline = time.monotonic() + timeout
    while running_pid(layout) is None:
        if time.monotonic() > deadline:
            raise EmbeddedServerError(
                f"embedded Redis did not answer within {timeout:.0f} s; "
                f"see {layout.redis_dir / 'redis.log'}"
            )
        time.sleep(0.02)
    return time.perf_counter() - started


def stop(layout: Layout, timeout: float = 10) -> bool:
    """SHUTDOWN NOSAVE; False when it was not running. Stale files are removed either way."""
    pid = running_pid(layout)
    if pid is not None:
        client = redis.Redis(unix_socket_path=str(layout.redis_socket), socket_timeout=5)
        try:
            client.shutdown(nosave=True)
        except (redis.RedisError, OSError):
            pass  # the connection drops as the server exits
        finally:
            client.close()
        deadline = time.monotonic() + timeout
        while process_matches(pid, "redis-server") and time.monotonic() < deadline:
            time.sleep(0.02)
    (layout.redis_dir / "redis.pid").unlink(missing_ok=True)
    layout.redis_socket.unlink(missing_ok=True)
    return pid is not None
