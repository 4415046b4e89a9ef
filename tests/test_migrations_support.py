"""alpha_data.migrations_support and the timestamp mixin: what an application's tree relies on.

* the library's tree is found (checkout or wheel) and its head is known;
* ``include_object_for`` compares only the app's tables;
* the ``updated_at`` trigger DDL quotes identifiers;
* the mixin merges ``eager_defaults`` and adds the trigger on ``create_all``, so
  ``updated_at`` is current and readable right after an ORM update;
* examples/watchlists' tree, run twice in a subprocess (its models must not join
  this process's metadata), keeps the library's revisions out of its own runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

from sqlalchemy import Column, Integer, MetaData, String, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from alpha_data.migrations_support import (
    include_object_for,
    library_head,
    library_script_location,
    library_tables,
)
from alpha_data.models.base import TimestampedIdMixin
from alpha_data.models.triggers import create_trigger_sql, drop_trigger_sql
from tests.support import ROOT

APP = ROOT / "examples" / "watchlists"


def test_the_checkout_uses_the_repositorys_tree_and_knows_its_head() -> None:
    assert library_script_location() == ROOT / "migrations"
    newest = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("0*.py"))[-1]
    assert library_head() == newest.split("_", 1)[0]


def test_include_object_compares_only_the_named_tables() -> None:
    meta = MetaData()
    mine = Table("watchlists", meta, Column("id", Integer, primary_key=True))
    theirs = Table("users", meta, Column("id", Integer, primary_key=True))
    versions = Table("alembic_version", meta, Column("version_num", String(32)))
    include = include_object_for({"watchlists"})
    assert include(mine, "watchlists", "table", False, None)
    assert include(mine.c.id, "id", "column", True, None)
    assert not include(theirs, "users", "table", True, None)
    assert not include(theirs.c.id, "id", "column", False, None)
    assert not include(versions, "alembic_version", "table", True, None)  # never proposed for DROP
    assert {"users", "api_keys", "portfolios", "positions", "trades", "alerts"} <= library_tables()


def test_trigger_ddl_quotes_identifiers() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    assert create_trigger_sql(dialect, "watchlists") == (
        "CREATE TRIGGER trg_watchlists_touch_updated_at BEFORE UPDATE ON watchlists "
        "FOR EACH ROW EXECUTE FUNCTION alpha_data_touch_updated_at()"
    )
    odd = create_trigger_sql(dialect, 'My "List"', schema="app")
    assert 'ON app."My ""List"""' in odd
    assert '"trg_My ""List""_touch_updated_at"' in odd
    assert drop_trigger_sql(dialect, "watchlists").startswith("DROP TRIGGER IF EXISTS")


class _Base(DeclarativeBase):
    metadata = MetaData(schema="mixin_probe")


class Note(TimestampedIdMixin, _Base):
    __tablename__ = "notes"
    __mapper_args__ = {"confirm_deleted_rows": True}  # the mixin merges into the app's own

    body: Mapped[str] = mapped_column(String(50))


def test_the_mixin_merges_eager_defaults_into_the_classs_mapper_args() -> None:
    assert Note.__mapper__.eager_defaults is True
    assert Note.__mapper__.confirm_deleted_rows is True


async def test_created_tables_get_the_trigger_and_updated_at_reads_after_an_update(
    database_url: str,
) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            outer = await conn.begin()  # DDL included: nothing outlives the test
            await conn.execute(text("CREATE SCHEMA mixin_probe"))
            await conn.run_sync(_Base.metadata.create_all)
            session = AsyncSession(bind=conn, expire_on_commit=True)
            note = Note(body="first")
            session.add(note)
            await session.flush()
            created: datetime = note.updated_at
            note.body = "second"
            await session.flush()
            # eager_defaults: RETURNING brought the trigger's value back, no lazy load.
            assert note.updated_at > created
            bumped = await conn.execute(
                text("UPDATE mixin_probe.notes SET body = 'third' RETURNING updated_at")
            )
            assert bumped.scalar_one() > note.updated_at  # Core updates too
            await session.close()
            await outer.rollback()
    finally:
        await engine.dispose()


def _run_app_tree(url: str, script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APP / "src"), str(ROOT)])}
    code = (
        "import sys\n"
        "from alembic import command\n"
        "from alpha_data.migrations_support import app_config, upgrade, upgrade_library\n"
        f"cfg = app_config({str(APP / 'alembic.ini')!r}, {url!r})\n" + script
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_an_app_tree_needs_the_library_first_and_never_reapplies_it(fresh_database: str) -> None:
    refused = _run_app_tree(fresh_database, "command.upgrade(cfg, 'heads')\n")
    assert refused.returncode != 0
    assert "run `alpha-data migrate` first" in refused.stderr
    done = _run_app_tree(
        fresh_database,
        "upgrade(cfg, cfg.attributes['url'])\n"
        "upgrade(cfg, cfg.attributes['url'])\n"  # again: nothing to do, nothing re-applied
        "command.check(cfg)\n"
        "command.downgrade(cfg, 'watchlists@base')\n"
        "command.upgrade(cfg, 'heads')\n"
        "command.check(cfg)\n",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "No new upgrade operations detected" in done.stdout + done.stderr
