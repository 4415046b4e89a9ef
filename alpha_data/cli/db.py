"""``alpha-data db create|drop``, ``migrate`` and ``health``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import asyncpg
import typer
from alembic import command
from alembic.config import Config
from rich.table import Table
from sqlalchemy.engine import make_url

from alpha_data.cli.common import console, load_settings, run
from alpha_data.database import Database, Health
from alpha_data.errors import DatabaseUnavailableError
from alpha_data.migrations_support import library_config
from alpha_data.settings import Settings
from alpha_data.urls import database_name, server_address

__all__ = ["db_app", "register"]

db_app = typer.Typer(help="Create or drop the configured database.", no_args_is_help=True)


def _server_and_name(settings: Settings) -> tuple[str, str]:
    url = make_url(settings.database_url)
    # Decoded the same on every SQLAlchemy release (2.0 keeps "my%20db" encoded).
    name = database_name(settings.database_url) or "alpha_data"
    server = url.set(drivername="postgresql", database="postgres")
    return server.render_as_string(hide_password=False), name


async def _connect_server(settings: Settings) -> asyncpg.Connection:
    dsn, _ = _server_and_name(settings)
    try:
        return await asyncpg.connect(dsn, timeout=settings.connect_timeout)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailableError(
            f"cannot reach PostgreSQL at {server_address(settings.database_url)} "
            f"({type(exc).__name__}); "
            "set ALPHA_DATA_DATABASE_URL to point elsewhere"
        ) from None


async def create_database(settings: Settings) -> bool:
    """Create the configured database if missing; True when it was created."""
    _, name = _server_and_name(settings)
    conn = await _connect_server(settings)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        await conn.execute(f"CREATE DATABASE {quoted}")
        return True
    finally:
        await conn.close()


async def drop_database(settings: Settings) -> bool:
    """Drop the configured database if present; True when it was dropped."""
    _, name = _server_and_name(settings)
    conn = await _connect_server(settings)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        status = await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        return "DROP" in status
    finally:
        await conn.close()


def alembic_config(settings: Settings) -> Config:
    """Alembic config for the library's migrations (packaged or the checkout's) and the URL."""
    return library_config(settings.database_url)


@db_app.command("create")
def create() -> None:
    """Create the database named in ALPHA_DATA_DATABASE_URL if it is missing."""
    settings = load_settings()
    created = run(create_database(settings))
    _, name = _server_and_name(settings)
    console.print(f"database {name}: {'created' if created else 'already exists'}")


@db_app.command("drop")
def drop(yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Drop the configured database (asks first unless --yes)."""
    settings = load_settings()
    _, name = _server_and_name(settings)
    if not yes and not typer.confirm(f"Drop database {name}?"):
        raise typer.Exit(code=1)
    dropped = run(drop_database(settings))
    console.print(f"database {name}: {'dropped' if dropped else 'was not there'}")


def register(app: typer.Typer) -> None:
    """Add the top-level commands of this module to ``app``."""

    @app.command("migrate")
    def migrate(revision: str = typer.Argument("head")) -> None:
        """Run Alembic migrations up to REVISION (default head)."""
        settings = load_settings()
        run(_check_reachable(settings))
        command.upgrade(alembic_config(settings), revision)
        console.print(f"migrated to {revision}")

    @app.command("health")
    def health() -> None:
        """Print database and cache health; exit 1 when the database is down."""
        report = run(_health(load_settings()))
        table = Table("component", "status", "latency ms", "detail")
        parts = [("postgresql", report.database, "[red]down[/]")]
        for where, replica in report.replicas.items():
            parts.append((f"replica {where}", replica, "[yellow]down[/]"))
        parts.append(("cache", report.cache, "[yellow]degraded[/]"))
        for name, part, bad in parts:
            latency = f"{part.latency_ms:.1f}" if part.latency_ms is not None else "-"
            status = "[green]ok[/]" if part.ok else bad
            table.add_row(name, status, latency, part.error or _detail(part.detail))
        table.add_row("pool", "", "", _detail(report.pool))
        console.print(table)
        console.print(f"overall: {report.status}")
        if report.status == "down":
            raise typer.Exit(code=1)


def _detail(detail: Mapping[str, Any]) -> str:
    """``key value, ...`` of a health detail (nested mappings flattened, zeros of stats kept)."""
    out = []
    for key, value in detail.items():
        if isinstance(value, Mapping):
            out.append(_detail(value))
        else:
            out.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(out)


async def _check_reachable(settings: Settings) -> None:
    conn = await _connect_server(settings)
    await conn.close()


async def _health(settings: Settings) -> Health:
    db = Database(settings)
    try:
        return await db.health()
    finally:
        await db.close()
