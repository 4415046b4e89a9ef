"""When to use the embedded servers, and the Settings that point at them.

The CLI falls back to the embedded PostgreSQL and Redis when no database URL was configured
(neither ``ALPHA_DATA_DATABASE_URL`` nor a line in ``.env``) and nothing answers at the
default one; ``ALPHA_DATA_EMBEDDED=1`` (what ``demo --embedded`` sets) asks for them outright.
A configured URL is never replaced: if it does not answer, the command says so.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from alpha_data.embedded import server_answers
from alpha_data.settings import Settings

__all__ = ["EMBEDDED_ENV", "embedded_settings", "wants_embedded"]

EMBEDDED_ENV = "ALPHA_DATA_EMBEDDED"


def wants_embedded(settings: Settings) -> str | None:
    """Why the embedded servers should be used for ``settings``, or None to use them as is.

    An empty reason: they were asked for (``ALPHA_DATA_EMBEDDED=1``, ``demo --embedded``).
    """
    if os.environ.get(EMBEDDED_ENV, "").lower() in ("1", "true", "yes"):
        return ""
    if "database_url" in settings.model_fields_set or server_answers(settings.database_url):
        return None
    parts = urlsplit(settings.database_url)
    return (
        f"no ALPHA_DATA_DATABASE_URL is configured and nothing answers at "
        f"{parts.hostname}:{parts.port or 5432}"
    )


def embedded_settings(settings: Settings, database_url: str, redis_url: str) -> Settings:
    """``settings`` pointed at the embedded servers (a configured Redis URL is kept)."""
    update = {"database_url": database_url}
    if "redis_url" not in settings.model_fields_set:
        update["redis_url"] = redis_url
    return settings.model_copy(update=update)
