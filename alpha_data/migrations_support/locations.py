"""Where the library's Alembic tree is, its head, and running it.

An installed wheel carries the revisions as ``alpha_data/_migrations`` (copied
from the repository's ``migrations/`` at build time, see setup.py); a checkout
(editable install) uses the repository's ``migrations/`` itself. Everything
that runs the library's migrations (``alpha-data migrate``, the pytest plugin,
an application's environment) finds them here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

__all__ = [
    "LIBRARY_VERSION_TABLE",
    "PACKAGED_VERSIONS",
    "library_config",
    "library_head",
    "library_script_location",
    "library_version_location",
    "upgrade_library",
]

#: The version table of the library's own tree (Alembic's default name).
LIBRARY_VERSION_TABLE = "alembic_version"

#: The packaged revisions in Alembic's resource notation, for an app's alembic.ini
#: (``version_locations``) when alpha_data is installed from a wheel.
PACKAGED_VERSIONS = "alpha_data:_migrations/versions"

_PACKAGED = "_migrations"


def library_script_location() -> Path:
    """The directory holding the library's ``env.py`` and ``versions/``.

    The packaged copy when present (a wheel install), else the repository's
    ``migrations/`` next to the package (a checkout); FileNotFoundError when
    neither is there (a broken build).
    """
    packaged = resources.files("alpha_data") / _PACKAGED
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2]
    tree = checkout / "migrations"
    if (tree / "env.py").is_file() and (checkout / "alembic.ini").is_file():
        return tree
    raise FileNotFoundError(
        "alpha_data's migrations are missing: neither alpha_data/_migrations (wheel) "
        f"nor {tree} (checkout) exists; reinstall alpha_data from a wheel"
    )


def library_version_location() -> Path:
    """The library's ``versions/`` directory (for an app's ``version_locations``)."""
    return library_script_location() / "versions"


def library_config(url: str | None = None) -> Config:
    """An Alembic Config for the library's tree; ``url`` is the database to migrate.

    Without ``url`` the library's env.py takes it from Settings
    (``ALPHA_DATA_DATABASE_URL``). Logging configuration is left to the caller.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(library_script_location()))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_table", LIBRARY_VERSION_TABLE)
    if url is not None:
        cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def library_head() -> str:
    """The head revision of the installed library's tree (an app's ``depends_on``)."""
    head = ScriptDirectory.from_config(library_config()).get_current_head()
    if head is None:  # pragma: no cover - the tree always has revisions
        raise FileNotFoundError("alpha_data's migration tree has no revisions")
    return head


def upgrade_library(url: str, revision: str = "head") -> None:
    """Run the library's migrations on the database at ``url`` up to ``revision``."""
    command.upgrade(library_config(url), revision)
