"""Stop early, in one line, when PostgreSQL is not reachable (stdlib only).

Reads ALPHA_DATA_DATABASE_URL from the environment or ./.env; prints which
host/port could not be reached and how to point the project elsewhere.

``--demo``: when no URL is configured and nothing answers at the default one, say
so in one line and exit 2: ``make demo`` then uses the embedded servers.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432/alpha_data"


def configured_url() -> str | None:
    url = os.environ.get("ALPHA_DATA_DATABASE_URL")
    env_file = Path(".env")
    if url is None and env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ALPHA_DATA_DATABASE_URL":
                url = value.strip().strip("'\"")
    return url or None


def main() -> int:
    configured = configured_url()
    url = configured or DEFAULT
    if "--test" in sys.argv[1:]:  # the test suite's server (a database per run is made there)
        configured = os.environ.get("ALPHA_DATA_TEST_SERVER_URL", configured)
        url = configured or url
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        with socket.create_connection((host, port), timeout=3):
            return 0
    except OSError as exc:
        if "--demo" in sys.argv[1:] and configured is None:
            print(
                f"no PostgreSQL at {host}:{port} and no ALPHA_DATA_DATABASE_URL: "
                "the demo uses the embedded servers (extra `embedded`)",
                file=sys.stderr,
            )
            return 2
        print(
            f"error: cannot reach PostgreSQL at {host}:{port} ({exc.strerror or exc}); "
            "start it or set ALPHA_DATA_DATABASE_URL"
            f"{' / ALPHA_DATA_TEST_SERVER_URL' if '--test' in sys.argv[1:] else ''}"
            " (see .env.example)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
