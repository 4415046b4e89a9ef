"""upgrade head → downgrade base → upgrade head → alembic check, on a fresh database.

Run by the nox session ``migrations``: ``python -m tests.migration_roundtrip``.
"""

from __future__ import annotations

import sys

from alembic import command

from tests.support import alembic_config, create_database, drop_database, run_id


def main() -> int:
    name = f"alpha_migrations_{run_id()}"
    url = create_database(name)
    try:
        cfg = alembic_config(url)
        command.upgrade(cfg, "head")
        command.downgrade(cfg, "base")
        command.upgrade(cfg, "head")
        command.check(cfg)  # raises if models and schema differ
        print("migrations: upgrade/downgrade/upgrade/check passed")
    finally:
        drop_database(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
