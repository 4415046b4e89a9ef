"""Settings: defaults, environment parsing, validation, secret hiding."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from alpha_data import Settings
from alpha_data.settings import mask_url


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[arg-type]


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "POOL_SIZE"):
        monkeypatch.delenv(f"ALPHA_DATA_{name}", raising=False)
    s = make()
    assert s.database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/alpha_data"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.replica_urls == []
    assert isinstance(s.statement_timeout, float)


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHA_DATA_POOL_SIZE", "7")
    monkeypatch.setenv("ALPHA_DATA_STATEMENT_TIMEOUT", "2.5")
    monkeypatch.setenv(
        "ALPHA_DATA_REPLICA_URLS", '["postgresql://r1:5432/db", "postgresql://r2:5432/db"]'
    )
    monkeypatch.setenv("ALPHA_DATA_CACHE_ENABLED", "false")
    s = make()
    assert s.pool_size == 7
    assert s.statement_timeout == 2.5
    assert s.replica_urls == [
        "postgresql+asyncpg://r1:5432/db",
        "postgresql+asyncpg://r2:5432/db",
    ]
    assert s.cache_enabled is False


def test_env_file_is_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPHA_DATA_CACHE_PREFIX", raising=False)
    env = tmp_path / ".env"
    env.write_text("ALPHA_DATA_CACHE_PREFIX=from-file\n")
    assert Settings(_env_file=env).cache_prefix == "from-file"  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pool_size", 0),
        ("pool_size", "many"),
        ("pool_timeout", -1),
        ("connect_timeout", 0),
        ("database_url", "mysql://root@localhost/db"),
        ("redis_url", "http://localhost"),
        ("cache_prefix", "bad prefix!"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        make(**{name: value})
    assert name in str(info.value)


def test_passwords_never_shown() -> None:
    s = make(
        database_url="postgresql+asyncpg://app:hunter2secret@db.example:5433/fund",
        redis_url="redis://:redispass99@cache:6379/0",
        replica_urls=["postgresql://app:replicapw7@r1/fund"],
    )
    for text in (repr(s), str(s), s.safe_database_url, s.safe_redis_url):
        assert "hunter2secret" not in text
        assert "redispass99" not in text
        assert "replicapw7" not in text
    assert "db.example" in repr(s)
    assert s.database_url.endswith("@db.example:5433/fund")  # the real value is usable


def test_invalid_url_error_hides_password() -> None:
    with pytest.raises(ValidationError) as info:
        make(database_url="mysql://root:topsecret1@localhost/db")
    assert "topsecret1" not in str(info.value)


def test_mask_url() -> None:
    assert mask_url("postgresql://u:p@h:1/d") == "postgresql://u:***@h:1/d"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"
