"""The body of an application's Alembic ``env.py``: its own tables, its own version table.

An application's models live on ``alpha_data.models.Base`` (one MetaData, one
naming convention, foreign keys to ``users`` resolve), so autogenerate must be
told which tables are the app's: :func:`include_object_for` keeps only those,
and ignores the library's tables and version table. The app's revisions are
recorded in a version table of its own, so ``alpha-data migrate`` and the app's
``alembic upgrade`` never see each other's revisions.

The app's first revision ``depends_on`` the library's head; for that Alembic
needs the library's revisions in the app's script directory
(``version_locations = <app>/versions alpha_data:_migrations/versions``). They
are applied by the library's own tree: before the app's migrations run, the
library's revision recorded in ``alembic_version`` is stamped into the app's
version table, and a library behind the installed package's head is an error
telling to run ``alpha-data migrate`` first (:func:`upgrade` does both steps).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alpha_data.migrations_support.locations import (
    LIBRARY_VERSION_TABLE,
    PACKAGED_VERSIONS,
    library_head,
    library_version_location,
    upgrade_library,
)
from alpha_data.models import Base
from alpha_data.settings import Settings

__all__ = [
    "IncludeObject",
    "app_config",
    "app_tables",
    "include_object_for",
    "library_tables",
    "run_app_migrations",
    "upgrade",
]

IncludeObject = Callable[[Any, "str | None", str, bool, Any], bool]

#: Schemas whose tables the library manages by hand (time-series metrics).
_LIBRARY_SCHEMAS = frozenset({"alphapulse"})


def library_tables() -> frozenset[str]:
    """Names of the tables alpha_data's own models map."""
    return frozenset(
        mapper.local_table.name  # type: ignore[attr-defined]
        for mapper in Base.registry.mappers
        if mapper.class_.__module__.split(".", 1)[0] == "alpha_data"
    )


def app_tables(metadata: MetaData = Base.metadata) -> frozenset[str]:
    """Tables of ``metadata`` that alpha_data does not own: the application's."""
    own = library_tables()
    return frozenset(
        table.name
        for table in metadata.tables.values()
        if table.name not in own and table.schema not in _LIBRARY_SCHEMAS
    )


def include_object_for(tables: Iterable[str] | None = None) -> IncludeObject:
    """``include_object`` hook comparing only ``tables`` (default: :func:`app_tables`).

    Tables in the database that are not named (the library's, its version
    table, other applications') are neither compared nor proposed for DROP.
    """
    names = frozenset(tables) if tables is not None else None

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        allowed = names if names is not None else app_tables()
        table = obj if type_ == "table" else getattr(obj, "table", None)
        if table is None:
            return True
        return str(table.name) in allowed

    return include_object


def app_config(ini_path: str, url: str | None = None) -> Config:
    """The app's Alembic Config with the library's revisions on ``version_locations``.

    The ini's ``alpha_data:_migrations/versions`` entry (right for a wheel
    install) is replaced by the resolved location, so this also works with
    alpha_data installed from a checkout; ``url`` is passed to the environment
    as ``config.attributes["url"]``.
    """
    cfg = Config(ini_path)
    own = cfg.get_main_option("version_locations") or ""
    library = str(library_version_location())
    kept = [loc for loc in own.split() if loc and loc != PACKAGED_VERSIONS]
    cfg.set_main_option("path_separator", "space")
    cfg.set_main_option("version_locations", " ".join([*kept, library]))
    if url is not None:
        cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(app: Config, url: str, revision: str = "heads") -> None:
    """The library's migrations to head, then the app's to ``revision``."""
    upgrade_library(url)
    app.attributes["url"] = url
    command.upgrade(app, revision)


def _sync_library(connection: Connection, version_table: str) -> None:
    """Record in the app's version table where the library's own tree stands.

    The library's revisions are applied by its own tree (``alembic_version``);
    the app's table only needs to know that they are there, so that its
    revisions' ``depends_on`` is met without applying them a second time.
    Alembic's ``stamp`` would move the app's branch heads that depend on the
    library's revision, so the row is written here: added when no recorded
    head already covers it (a head's ancestors include its dependencies),
    replacing an older library revision recorded as a head of its own.
    """
    library = MigrationContext.configure(
        connection, opts={"version_table": LIBRARY_VERSION_TABLE}
    ).get_current_revision()
    head = library_head()
    if library != head:
        raise CommandError(
            f"alpha_data's schema is at {library or 'base'} but the installed alpha_data "
            f"needs {head}: run `alpha-data migrate` first"
        )
    script = context.script
    heads = context.get_context().get_current_heads()
    covered = {rev.revision for rev in script.iterate_revisions(heads, "base")} if heads else set()
    if head in covered:
        return
    older = {rev.revision for rev in script.iterate_revisions(head, "base")}
    table = _version_table(version_table)
    table.create(connection, checkfirst=True)
    stale = [rev for rev in heads if rev in older]
    if stale:
        connection.execute(table.delete().where(table.c.version_num.in_(stale)))
    connection.execute(table.insert().values(version_num=head))


def _version_table(name: str) -> Table:
    """Alembic's version table layout (one ``version_num`` per branch head)."""
    return Table(
        name,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{name}_pkc"),
    )


def _url() -> str:
    config = context.config
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    return str(url) if url else Settings().database_url


def run_app_migrations(
    *,
    version_table: str,
    target_metadata: MetaData = Base.metadata,
    tables: Iterable[str] | None = None,
) -> None:
    """Everything an application's ``env.py`` does; call it from there.

    ``version_table`` must be the app's own (e.g. ``"watchlists_alembic_version"``);
    ``tables`` defaults to every table on ``target_metadata`` that alpha_data
    does not own. The URL comes from ``config.attributes["url"]``, ``-x url=``
    or Settings, like the library's environment.
    """
    if version_table == LIBRARY_VERSION_TABLE:
        raise ValueError("an application needs a version table of its own")
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "version_table": version_table,
        "include_object": include_object_for(tables),
        "include_schemas": False,
        "compare_type": True,
        "compare_server_default": True,
    }
    if context.is_offline_mode():
        context.configure(url=_url(), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return

    def configure(connection: Connection) -> None:
        context.configure(connection=connection, transaction_per_migration=True, **options)
        with context.begin_transaction():
            _sync_library(connection, version_table)
            context.run_migrations()

    connection = context.config.attributes.get("connection")
    if connection is not None:
        configure(connection)
        return
    asyncio.run(_run_online(configure))


async def _run_online(configure: Callable[[Connection], None]) -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(configure)
            await connection.commit()
    finally:
        await engine.dispose()
