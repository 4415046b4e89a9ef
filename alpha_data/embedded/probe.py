"""Does a PostgreSQL server answer at a URL? (the test for "nothing is running there")."""

from __future__ import annotations

import os
import socket
from urllib.parse import parse_qs, urlsplit

__all__ = ["server_answers"]


def server_answers(url: str, timeout: float = 1.0) -> bool:
    """Does something accept connections where ``url`` points (TCP host:port or socket dir)?"""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [""])[-1]
    try:
        if socket_dir.startswith("/"):
            path = os.path.join(socket_dir, f".s.PGSQL.{parts.port or 5432}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                probe.connect(path)
        else:
            address = (parts.hostname or "127.0.0.1", parts.port or 5432)
            with socket.create_connection(address, timeout=timeout):
                pass
    except (OSError, ValueError):
        return False
    return True
