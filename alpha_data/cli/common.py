"""Shared pieces of the CLI: the Typer app, settings loading, one-line errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from alpha_data.errors import DataLayerError, sqlstate_of
from alpha_data.settings import Settings

__all__ = ["app", "console", "load_settings", "run"]

T = TypeVar("T")

app = typer.Typer(
    name="alpha-data",
    help="alpha_data: the async data layer of AlphaPulse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print one error line and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code=1)


def load_settings() -> Settings:
    """Settings from the environment/.env, or one clear line naming the bad setting."""
    try:
        return Settings()
    except ValidationError as exc:
        names = ", ".join(
            f"ALPHA_DATA_{str(e['loc'][0]).upper()} ({e['msg']})" for e in exc.errors()
        )
        raise fail(f"invalid setting: {names}") from None


#: undefined_table, invalid_schema_name: the database was never migrated (or only partly).
_SCHEMA_MISSING = frozenset({"42P01", "3F000"})
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
