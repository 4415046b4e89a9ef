"""The one place that takes connection URLs apart: where a URL points, and masking it.

``where`` names a PostgreSQL server and database for messages, health
reports and the router (``host:port/database``, the database name decoded:
``my%20db`` is ``my db``), and is the key under which replica status and
replica probes are joined, so there is exactly one spelling. ``mask_url``
replaces a password with ``***`` for logs, reprs and errors. Neither ever
returns credentials.
"""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

__all__ = ["UNPARSEABLE", "database_name", "mask_url", "server_address", "where"]

#: What the helpers return for a URL they cannot parse (never the URL itself).
UNPARSEABLE = "<unparseable url>"
_DEFAULT_PORT = 5432


def _host(parts: SplitResult) -> str:
    host = parts.hostname or "localhost"
    return f"[{host}]" if ":" in host else host


def server_address(url: str) -> str:
    """``host:port`` of a PostgreSQL URL (no user, no password)."""
    try:
        parts = urlsplit(url)
        return f"{_host(parts)}:{parts.port or _DEFAULT_PORT}"
    except ValueError:
        return UNPARSEABLE


def database_name(url: str) -> str:
    """The database a PostgreSQL URL names, percent-decoded (``my%20db`` → ``my db``)."""
    try:
        return unquote(urlsplit(url).path.lstrip("/"))
    except ValueError:
        return ""


def where(url: str) -> str:
    """``host:port/database`` of a PostgreSQL URL (no user, no password)."""
    address = server_address(url)
    if address == UNPARSEABLE:
        return UNPARSEABLE
    return f"{address}/{database_name(url)}"


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors).

    Everything else, percent-encoding included, is kept as written.
    """
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        if "," in parts.netloc:  # redis+sentinel:// and redis+cluster:// name several hosts
            hosts = parts.netloc.rpartition("@")[2]
            return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{hosts}"))
        port = f":{parts.port}" if parts.port is not None else ""
        host = _host(parts) if parts.hostname else ""
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}"))
    except ValueError:
        return UNPARSEABLE
