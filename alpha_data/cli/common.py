"""Shared pieces of the CLI: the Typer app, settings loading, one-line errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from alpha_data.cli.fallback import wants_embedded
from alpha_data.driver_errors import sqlstate_of
from alpha_data.errors import DataLayerError
from alpha_data.settings import Settings
from alpha_data.sqlstates import INVALID_SCHEMA_NAME, UNDEFINED_TABLE

if TYPE_CHECKING:
    from alpha_data.embedded import EmbeddedServers

__all__ = ["app", "console", "load_settings", "resolve_settings", "run"]

T = TypeVar("T")

app = typer.Typer(
    name="alpha-data",
    help="alpha_data: the async data layer of AlphaPulse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> typer.Exit:
    """Print one error line and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code=1)


def load_settings() -> Settings:
    """Settings from the environment/.env, or one clear line naming the bad setting.

    With no database configured and none answering (or ``ALPHA_DATA_EMBEDDED=1``), the
    settings point at the embedded servers, started on the way (see cli/fallback.py).
    """
    return resolve_settings()[0]


def resolve_settings() -> tuple[Settings, EmbeddedServers | None]:
    """load_settings() and the embedded servers it switched to (None: the configured ones)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        names = ", ".join(
            f"ALPHA_DATA_{str(e['loc'][0]).upper()} ({e['msg']})" for e in exc.errors()
        )
        raise fail(f"invalid setting: {names}") from None
    reason = wants_embedded(settings)
    if reason is None:
        return settings, None
    from alpha_data.cli.embedded import switch_to_embedded  # the CLI module imports this one

    return switch_to_embedded(settings, reason)


#: undefined_table, invalid_schema_name: the database was never migrated (or only partly).
_SCHEMA_MISSING = frozenset({UNDEFINED_TABLE, INVALID_SCHEMA_NAME})
SCHEMA_MISSING_MESSAGE = "the schema is missing: run `alpha-data migrate`"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; alpha_data errors become one line and exit code 1.

    A table or schema that does not exist means the database was not
    migrated: the line says so and names the command that fixes it.
    """
    try:
        return asyncio.run(coro)
    except DataLayerError as exc:
        if exc.sqlstate in _SCHEMA_MISSING:
            raise fail(SCHEMA_MISSING_MESSAGE) from None
        raise fail(exc.message) from None
    except Exception as exc:
        if sqlstate_of(exc) in _SCHEMA_MISSING:  # raised outside a repository
            raise fail(SCHEMA_MISSING_MESSAGE) from None
        raise
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
