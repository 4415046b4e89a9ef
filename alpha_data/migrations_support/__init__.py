"""Alembic support: the library's packaged migrations, and an application's own tree.

For the library: :func:`library_script_location`, :func:`library_config`,
:func:`upgrade_library` (what ``alpha-data migrate`` runs) and
:func:`library_head` (what an application's first revision ``depends_on``).

For an application (walk-through in docs/extending.md): its ``env.py`` calls
:func:`run_app_migrations` with a version table of its own, autogenerate sees
only its tables (:func:`include_object_for`), and a revision adds the
``updated_at`` trigger with :func:`create_updated_at_trigger`. :func:`upgrade`
runs the library's migrations and then the app's.
"""

from alpha_data.migrations_support.appenv import (
    app_config,
    app_tables,
    include_object_for,
    library_tables,
    run_app_migrations,
    upgrade,
)
from alpha_data.migrations_support.locations import (
    LIBRARY_VERSION_TABLE,
    PACKAGED_VERSIONS,
    library_config,
    library_head,
    library_script_location,
    library_version_location,
    upgrade_library,
)
from alpha_data.migrations_support.ops import create_updated_at_trigger, drop_updated_at_trigger

__all__ = [
    "LIBRARY_VERSION_TABLE",
    "PACKAGED_VERSIONS",
    "app_config",
    "app_tables",
    "create_updated_at_trigger",
    "drop_updated_at_trigger",
    "include_object_for",
    "library_config",
    "library_head",
    "library_script_location",
    "library_tables",
    "library_version_location",
    "run_app_migrations",
    "upgrade",
    "upgrade_library",
]
