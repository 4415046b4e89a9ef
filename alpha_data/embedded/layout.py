"""Where the embedded servers keep their files, and the lock that serialises changes to them.

One directory holds everything (kept between runs so a warm start skips ``initdb``)::

    <data_dir>/lock            flock: one process at a time inits/starts/stops/cleans
    <data_dir>/state.json      measured init and warm-start times, server versions
    <data_dir>/postgres/       PGDATA (``postgres.init/`` while initdb runs: renamed when done)
    <data_dir>/postgres.log    the server log
    <data_dir>/redis/          Redis pidfile, log and working directory
    <sockets>                  PostgreSQL's and Redis' Unix sockets, in a 0700 directory

The default ``data_dir`` is ``$ALPHA_DATA_EMBEDDED_DIR``, else
``$XDG_DATA_HOME/alpha_data/embedded`` (``~/.local/share/alpha_data/embedded``).
Sockets live in ``<data_dir>/run`` unless that path is too long for a Unix socket;
then in ``<tmp>/alpha_data-<uid>-<hash of data_dir>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alpha_data.embedded.errors import EmbeddedServerError

__all__ = ["DATA_DIR_ENV", "Layout", "default_data_dir", "locked"]

DATA_DIR_ENV = "ALPHA_DATA_EMBEDDED_DIR"
#: Longest socket path we accept (sun_path is 108 bytes on Linux, 104 on macOS).
_MAX_SOCKET_PATH = 100
_SOCKET_NAME = ".s.PGSQL.5432"


def default_data_dir() -> Path:
    """``$ALPHA_DATA_EMBEDDED_DIR`` or ``$XDG_DATA_HOME/alpha_data/embedded``."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(base).expanduser() / "alpha_data" / "embedded").resolve()


@dataclass(frozen=True)
class Layout:
    """The paths of one embedded data directory."""

    root: Path

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def pgdata_init(self) -> Path:
        return self.root / "postgres.init"

    @property
    def pg_log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def socket_dir(self) -> Path:
        """``<root>/run`` when short enough for a socket path, else a private tmp dir."""
        local = self.root / "run"
        if len(str(local / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return local
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"alpha_data-{os.getuid()}-{digest}"

    @property
    def pg_socket(self) -> Path:
        return self.socket_dir / _SOCKET_NAME

    @property
    def redis_socket(self) -> Path:
        return self.socket_dir / "redis.sock"

    def make_socket_dir(self) -> Path:
        """Create the socket directory private to this user (0700): only we may connect."""
        path = self.socket_dir
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_uid != os.getuid():
            raise EmbeddedServerError(f"socket directory {path} belongs to another user")
        path.chmod(0o700)
        return path

    def read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update_state(self, **values: Any) -> None:
        """Merge ``values`` into state.json (written atomically)."""
        state = self.read_state()
        state.update(values)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)


@contextmanager
def locked(layout: Layout, timeout: float = 120.0) -> Iterator[None]:
    """Hold the directory's exclusive lock (released by the kernel if the process dies)."""
    import fcntl  # POSIX only: imported here so the package imports anywhere

    layout.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"{layout.root} is locked by another process for over {timeout:.0f} s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
