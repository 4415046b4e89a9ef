"""The project's tests run on alpha_data's own pytest plugin (``alpha_data.testing``).

* ``db``: a Database whose sessions all run inside one outer transaction that
  is rolled back after the test (``uow.commit()`` commits a SAVEPOINT).
* ``real_db``: a Database on the real pool, for concurrency/fault tests; the
  tables are truncated afterwards.
* ``settings``, ``database_url`` (one database per run, migrated with Alembic),
  ``redis_prefix`` (one per test; the run's keys are deleted at the end) and a
  fast password hasher for every test.
* ``fresh_database``: the URL of a new, empty database (no schema), dropped
  after the test (migration and CLI tests start from nothing).
"""

from collections.abc import Iterator

import pytest

pytest_plugins = ["alpha_data.testing"]


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database (dropped afterwards)."""
    # Imported here: importing alpha_data.testing before pytest loads it as the
    # plugin above would keep pytest from rewriting its asserts.
    from tests.support import create_database, drop_database, run_id

    name = f"alpha_fresh_{run_id()}"
    url = create_database(name)
    try:
        yield url
    finally:
        drop_database(name)


def _dump_tasks(signum: int, frame: object) -> None:
    """SIGUSR1: print every asyncio task's stack (what a hung test is waiting on)."""
    import asyncio
    import sys

    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return
    for task in asyncio.all_tasks(loop):
        task.print_stack(limit=30, file=sys.stderr)
    sys.stderr.flush()


def pytest_configure(config: pytest.Config) -> None:
    import signal

    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, _dump_tasks)
