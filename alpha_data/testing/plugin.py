"""The fixtures of ``alpha_data.testing`` (an application enables them in its root conftest).

Session:
    ``alpha_data_servers`` (:func:`~alpha_data.testing.servers.resolve_servers`),
    ``run_name``, ``app_alembic_config`` (the app's alembic.ini, from the
    ``--alpha-data-app-alembic`` option / ``alpha_data_app_alembic`` ini setting,
    or override the fixture), ``database_url`` (a database created for the run,
    migrated by the library's and then the app's migrations, dropped at the end).
Per test:
    ``redis_prefix`` (``t<run>:<n>``; the run's keys are deleted at the end),
    ``settings``, ``db`` (a Database isolated in one outer transaction rolled
    back after the test), ``real_db`` (the real pool; every table truncated
    afterwards) and, for every test, ``fast_hasher`` (a cheap argon2id through
    ``alpha_data.security.set_password_hasher``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
from argon2 import PasswordHasher

from alpha_data.database import Database
from alpha_data.migrations_support import app_config, upgrade, upgrade_library
from alpha_data.security import use_password_hasher
from alpha_data.settings import Settings
from alpha_data.testing.databases import (
    NO_ENV_FILE,
    create_database,
    drop_database,
    isolated,
    run_id,
    truncate_all,
)
from alpha_data.testing.hashing import FAST_HASHER
from alpha_data.testing.servers import TestServers, resolve_servers
from alpha_data.uow import UnitOfWork

__all__ = [
    "alpha_data_servers",
    "app_alembic_config",
    "database_url",
    "db",
    "fast_hasher",
    "pytest_addoption",
    "real_db",
    "redis_prefix",
    "run_name",
    "settings",
    "unit_of_work_class",
]

_APP_ALEMBIC = "alpha_data_app_alembic"
_counter = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--alpha-data-app-alembic PATH`` / ini ``alpha_data_app_alembic``: the app's alembic.ini."""
    help_ = "the application's alembic.ini: its migrations run after the library's"
    parser.addoption("--alpha-data-app-alembic", dest=_APP_ALEMBIC, default=None, help=help_)
    parser.addini(_APP_ALEMBIC, help_, default="")


@pytest.fixture(scope="session")
def alpha_data_servers() -> TestServers:
    """The PostgreSQL and Redis servers of this run."""
    return resolve_servers()


@pytest.fixture(scope="session")
def run_name() -> str:
    """Unique to this run: names the database and the Redis key prefix."""
    return run_id()


@pytest.fixture(scope="session")
def app_alembic_config(pytestconfig: pytest.Config) -> Path | None:
    """The application's alembic.ini (relative to the rootdir), or None for none."""
    value = pytestconfig.getoption(_APP_ALEMBIC) or pytestconfig.getini(_APP_ALEMBIC)
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else pytestconfig.rootpath / path


@pytest.fixture(scope="session")
def database_url(
    alpha_data_servers: TestServers, run_name: str, app_alembic_config: Path | None
) -> Iterator[str]:
    """A database for the run, migrated to the library's (and the app's) heads."""
    name = f"alpha_test_{run_name}"
    url = create_database(alpha_data_servers.postgres_url, name)
    try:
        if app_alembic_config is None:
            upgrade_library(url)
        else:
            upgrade(app_config(str(app_alembic_config)), url)
        yield url
    finally:
        drop_database(alpha_data_servers.postgres_url, name)


@pytest.fixture(scope="session")
def _alpha_data_redis_cleanup(alpha_data_servers: TestServers, run_name: str) -> Iterator[None]:
    """Delete every key the run wrote under its prefixes (``t<run>:*``)."""
    yield
    if not alpha_data_servers.redis_url.startswith(("redis://", "rediss://", "unix://")):
        return
    client = redis.Redis.from_url(alpha_data_servers.redis_url)
    try:
        for key in client.scan_iter(match=f"t{run_name}:*", count=500):
            client.unlink(key)
    finally:
        client.close()


@pytest.fixture
def redis_prefix(run_name: str, _alpha_data_redis_cleanup: None) -> str:
    """This test's cache/event key prefix."""
    return f"t{run_name}:{next(_counter)}"


@pytest.fixture
def settings(database_url: str, alpha_data_servers: TestServers, redis_prefix: str) -> Settings:
    """Settings of this test: the run's database and a Redis prefix of its own."""
    return Settings(
        database_url=database_url,
        redis_url=alpha_data_servers.redis_url,
        cache_prefix=redis_prefix,
        pool_size=5,
        max_overflow=2,
        pool_timeout=5,
        connect_timeout=5,
        **NO_ENV_FILE,
    )


@pytest.fixture(scope="session")
def unit_of_work_class() -> type[UnitOfWork]:
    """The UnitOfWork class ``db`` and ``real_db`` build: override with the app's subclass."""
    return UnitOfWork


@pytest_asyncio.fixture
async def db(
    settings: Settings, unit_of_work_class: type[UnitOfWork]
) -> AsyncIterator[Database[Any]]:
    """A Database isolated by an outer transaction rolled back at the end of the test."""
    async with isolated(settings, unit_of_work_class) as database:
        yield database


@pytest_asyncio.fixture
async def real_db(
    settings: Settings, unit_of_work_class: type[UnitOfWork]
) -> AsyncIterator[Database[Any]]:
    """A Database on its real pool (separate connections); every table truncated afterwards."""
    database = Database(settings, unit_of_work_class=unit_of_work_class)
    await database.connect()
    try:
        yield database
    finally:
        await database.close()
        await truncate_all(settings.database_url)


@pytest.fixture(autouse=True)
def fast_hasher() -> Iterator[PasswordHasher]:
    """Every test hashes passwords with :data:`~alpha_data.testing.hashing.FAST_HASHER`."""
    with use_password_hasher(FAST_HASHER) as hasher:
        yield hasher
