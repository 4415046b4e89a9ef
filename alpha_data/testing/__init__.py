"""pytest support for alpha_data and the applications built on it.

Enable it in the application's root ``conftest.py``::

    pytest_plugins = ["alpha_data.testing"]

and name the app's Alembic config so its migrations run after the library's
(``pyproject.toml``)::

    [tool.pytest.ini_options]
    alpha_data_app_alembic = "alembic.ini"

It is opt-in (no ``pytest11`` entry point) so that installing alpha_data never
changes the tests of a project that did not ask for it. Needs the ``test``
extra (pytest, pytest-asyncio, factory-boy). Fixtures: see
:mod:`alpha_data.testing.plugin`; factories: :mod:`alpha_data.testing.factories`;
servers: :func:`resolve_servers`.
"""

from alpha_data.testing.databases import create_database, drop_database, isolated, truncate_all
from alpha_data.testing.hashing import FAST_HASHER
from alpha_data.testing.plugin import (
    _alpha_data_redis_cleanup,
    alpha_data_servers,
    app_alembic_config,
    database_url,
    db,
    fast_hasher,
    pytest_addoption,
    real_db,
    redis_prefix,
    run_name,
    settings,
    unit_of_work_class,
)
from alpha_data.testing.servers import TestServers, resolve_servers

__all__ = [
    "FAST_HASHER",
    "TestServers",
    "_alpha_data_redis_cleanup",
    "alpha_data_servers",
    "app_alembic_config",
    "create_database",
    "database_url",
    "db",
    "drop_database",
    "fast_hasher",
    "isolated",
    "pytest_addoption",
    "real_db",
    "redis_prefix",
    "resolve_servers",
    "run_name",
    "settings",
    "truncate_all",
    "unit_of_work_class",
]
