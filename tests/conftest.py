"""The project's tests run on alpha_data's own pytest plugin (``alpha_data.testing``).

* ``db``: a Database whose sessions all run inside one outer transaction that
  is rolled back after the test (``uow.commit()`` commits a SAVEPOINT).
* ``real_db``: a Database on the real pool, for concurrency/fault tests; the
  tables are truncated afterwards.
* ``settings``, ``database_url`` (one database per run, migrated with Alembic),
  ``redis_prefix`` (one per test; the run's keys are deleted at the end) and a
  fast password hasher for every test.
"""

pytest_plugins = ["alpha_data.testing"]
