"""Configuration of the data layer, read from ``ALPHA_DATA_*`` variables and ``.env``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from alpha_data.urls import mask_url

__all__ = ["Settings", "mask_url"]

_DB_SCHEMES = ("postgresql+asyncpg", "postgresql", "postgres")
_REDIS_SCHEMES = ("redis", "rediss", "unix", "memory", "redis+sentinel", "redis+cluster")


class Settings(BaseSettings):
    """Every knob of alpha_data; timeouts are seconds (float).

    URLs may carry passwords: ``repr`` and validation errors never show them.
    """

    model_config = SettingsConfigDict(
        env_prefix="ALPHA_DATA_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
        frozen=True,
    )

    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/alpha_data",
        description="PostgreSQL URL (postgresql+asyncpg://user[:password]@host:port/db).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis URL for cache and events; memory:// keeps both in-process.",
    )
    replica_urls: list[str] = Field(
        default_factory=list, description="Read replicas (JSON list in the environment)."
    )
    read_your_writes: bool = Field(
        default=True,
        description=(
            "After a commit, this Database reads from the primary until a replica has "
            "replayed past the commit's WAL position (see docs/scaling.md)."
        ),
    )
    replica_max_lag: float = Field(
        default=10.0,
        gt=0,
        description="Replicas measured further behind the primary than this (s) serve no reads.",
    )
    replica_check_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between health and lag probes of each replica.",
    )
    pgbouncer_mode: bool = Field(
        default=False,
        description=(
            "Connect through PgBouncer in transaction pooling: unnamed statements, no "
            "statement caches, statement_timeout set server-side (docs/scaling.md)."
        ),
    )
    pool_size: int = Field(default=10, ge=1, le=1000)
    max_overflow: int = Field(default=5, ge=0, le=1000)
    pool_timeout: float = Field(default=10.0, gt=0)
    pool_recycle: float = Field(default=1800.0, gt=0)
    pool_pre_ping: bool = True
    connect_timeout: float = Field(default=10.0, gt=0)
    statement_timeout: float = Field(default=30.0, ge=0)
    slow_query_ms: float = Field(
        default=500.0,
        ge=0,
        description=(
            "Statements slower than this many milliseconds are logged at WARNING on "
            "alpha_data.sql with their SQL text and duration, never their parameters "
            "(0 logs every statement)."
        ),
    )
    echo: bool = False
    cache_enabled: bool = True
    cache_ttl: float = Field(default=300.0, gt=0)
    cache_negative_ttl: float = Field(default=30.0, gt=0)
    cache_prefix: str = Field(default="alpha", min_length=1, max_length=64)
    redis_socket_timeout: float = Field(default=0.5, gt=0)
    outbox_relay: bool = Field(
        default=True,
        description=(
            "Run an outbox relay in every connected Database (delivers after-commit effects "
            "that their committing process could not); off when `alpha-data relay` runs apart."
        ),
    )
    outbox_grace: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds a committing process has to deliver its effects before relays may.",
    )
    outbox_poll_interval: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Relay polling fallback (LISTEN/NOTIFY wakes it sooner).",
    )
    outbox_batch: int = Field(
        default=200, ge=1, le=10_000, description="Rows a relay claims at once."
    )
    outbox_max_age: float = Field(
        default=10.0,
        gt=0,
        description="health() is degraded while the oldest undelivered outbox row is older (s).",
    )
    event_stream_maxlen: int = Field(
        default=100_000,
        ge=0,
        description=(
            "Retention of each event stream (<prefix>:stream:<channel>): entries beyond about "
            "this many are trimmed (XADD MAXLEN ~), acknowledged or not; 0 keeps every entry "
            "(docs/events.md)."
        ),
    )
    api_key_pepper: SecretStr | None = Field(
        default=None, description="Server-side secret mixed into API-key hashes (HMAC key)."
    )

    @field_validator("database_url", "replica_urls")
    @classmethod
    def _check_database_url(cls, value: str | list[str]) -> str | list[str]:
        for url in [value] if isinstance(value, str) else value:
            scheme = urlsplit(url).scheme
            if scheme not in _DB_SCHEMES:
                raise ValueError(
                    f"must be a postgresql+asyncpg:// URL, got scheme {scheme or '(none)'!r}"
                )
            if not urlsplit(url).hostname and "host=" not in url:
                raise ValueError("must name a host")
        if isinstance(value, str):
            return _asyncpg_url(value)
        return [_asyncpg_url(u) for u in value]

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in _REDIS_SCHEMES:
            raise ValueError(
                "must be a redis://, rediss://, unix://, memory://, redis+sentinel:// or "
                f"redis+cluster:// URL, got {scheme!r}"
            )
        return value

    @field_validator("cache_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not all(c.isalnum() or c in "-_.:" for c in value):
            raise ValueError("may only hold letters, digits and - _ . :")
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in ("database_url", "redis_url"):
                yield name, mask_url(value)
            elif name == "replica_urls":
                yield name, [mask_url(u) for u in value]
            else:
                yield name, value

    @property
    def safe_database_url(self) -> str:
        """The database URL with its password masked."""
        return mask_url(self.database_url)

    @property
    def safe_redis_url(self) -> str:
        """The Redis URL with its password masked."""
        return mask_url(self.redis_url)


def _asyncpg_url(url: str) -> str:
    """Normalise ``postgresql://`` and ``postgres://`` to the asyncpg driver."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    return url
