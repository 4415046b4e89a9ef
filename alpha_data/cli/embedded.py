"""``alpha-data embedded start|status|stop|clean|env`` and the switch to the embedded servers."""

from __future__ import annotations

import shlex

import typer
from alembic import command

from alpha_data.cli.common import console, err_console, fail, run
from alpha_data.cli.fallback import embedded_settings
from alpha_data.embedded import (
    DEFAULT_DATABASE,
    EmbeddedServerError,
    EmbeddedServers,
    clean_servers,
    default_data_dir,
    ensure_servers,
    server_status,
    stop_servers,
)
from alpha_data.settings import Settings

__all__ = ["describe", "embedded_app", "prepare_demo", "start_embedded", "switch_to_embedded"]

embedded_app = typer.Typer(
    help="Embedded PostgreSQL + Redis for demos, development and tests (the `embedded` extra).",
    no_args_is_help=True,
)


def _seconds(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "not measured yet"


def describe(servers: EmbeddedServers) -> str:
    """One line: versions, what this call did, the measured init and warm-start times."""
    did = {
        "initialized": f"initialized and started in {servers.seconds:.2f} s",
        "started": f"started in {servers.seconds:.2f} s",
        "running": "already running",
    }
    action = servers.postgres_action
    if action == "running" and servers.redis_action != "running":
        action = "started"
    return (
        f"embedded PostgreSQL {servers.postgres_version} + Redis {servers.redis_version}: "
        f"{did[action]}; first start (initdb) {_seconds(servers.init_seconds)}, "
        f"warm start {_seconds(servers.warm_start_seconds)}; data in {servers.data_dir}"
    )


def start_embedded() -> EmbeddedServers:
    """ensure_servers() with its error as one CLI line."""
    try:
        return ensure_servers()
    except EmbeddedServerError as exc:
        raise fail(exc.message) from None


def switch_to_embedded(settings: Settings, reason: str) -> tuple[Settings, EmbeddedServers]:
    """Say why (one line), start the embedded servers and return settings pointing at them."""
    if reason:
        err_console.print(f"[yellow]{reason}: using the embedded servers[/]", highlight=False)
    servers = start_embedded()
    err_console.print(describe(servers), highlight=False)
    return embedded_settings(settings, servers.database_url, servers.redis_url), servers


def prepare_demo(settings: Settings, servers: EmbeddedServers) -> None:
    """What ``make demo`` does before the demo: db create, migrate, seed (and time a warm start).

    On the very first run the warm start has not been measured: the servers are restarted
    once so the demo can print both times.
    """
    from alpha_data.cli.db import alembic_config, create_database
    from alpha_data.cli.seed import seed_data

    if servers.warm_start_seconds is None:
        try:
            stop_servers(servers.data_dir)
            servers = ensure_servers(servers.data_dir)
        except EmbeddedServerError as exc:
            raise fail(exc.message) from None
    console.print(describe(servers), highlight=False)
    created = run(create_database(settings))
    console.print(f"database {DEFAULT_DATABASE}: {'created' if created else 'already exists'}")
    command.upgrade(alembic_config(settings), "head")
    console.print("migrated to head")
    run(seed_data(settings, users=20, portfolios=5, trades=200, metrics=10_000))


@embedded_app.command("start")
def start() -> None:
    """Start the embedded servers (initialising the data directory on first use)."""
    console.print(describe(start_embedded()), highlight=False)


@embedded_app.command("status")
def status() -> None:
    """Show whether the embedded servers run, their URLs and measured start times."""
    state = server_status()
    console.print(f"data directory: {state.data_dir}", highlight=False)
    if not state.initialized:
        console.print("not initialized (the first start runs initdb)")
    for name, pid in (("postgresql", state.postgres_pid), ("redis", state.redis_pid)):
        console.print(f"{name}: {f'running (pid {pid})' if pid else 'stopped'}")
    console.print(f"database url: {state.database_url}", highlight=False)
    console.print(f"redis url: {state.redis_url}", highlight=False)
    console.print(
        f"first start (initdb) {_seconds(state.init_seconds)}, "
        f"warm start {_seconds(state.warm_start_seconds)}"
    )


@embedded_app.command("stop")
def stop() -> None:
    """Stop the embedded servers (the data directory is kept)."""
    try:
        pg, rd = stop_servers()
    except EmbeddedServerError as exc:
        raise fail(exc.message) from None
    console.print(
        f"postgresql: {'stopped' if pg else 'was not running'}; "
        f"redis: {'stopped' if rd else 'was not running'}"
    )


@embedded_app.command("clean")
def clean(yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Stop the embedded servers and delete their data directory."""
    where = default_data_dir()
    if not yes and not typer.confirm(f"Delete {where}?"):
        raise typer.Exit(code=1)
    try:
        removed = clean_servers()
    except EmbeddedServerError as exc:
        raise fail(exc.message) from None
    console.print(f"{where}: {'removed' if removed else 'was not there'}", highlight=False)


@embedded_app.command("env")
def env() -> None:
    """Start the servers and print ALPHA_DATA_* lines for a shell or a .env file."""
    servers = start_embedded()
    for name, value in (
        ("ALPHA_DATA_DATABASE_URL", servers.database_url),
        ("ALPHA_DATA_REDIS_URL", servers.redis_url),
        ("ALPHA_DATA_TEST_SERVER_URL", servers.server_url),
        ("ALPHA_DATA_TEST_REDIS_URL", servers.redis_url.replace("db=0", "db=15")),
    ):
        print(f"{name}={shlex.quote(value)}")
