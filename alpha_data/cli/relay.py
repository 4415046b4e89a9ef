"""``alpha-data relay``: run the outbox relay of one cache prefix as its own process.

For deployments that turn the in-process relay off (``ALPHA_DATA_OUTBOX_RELAY=false``)
or want one more: it delivers the after-commit effects (cache invalidations,
events) that committing processes could not, until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys

import typer

from alpha_data.cli.common import app, console, fail, load_settings, run
from alpha_data.database import Database
from alpha_data.settings import Settings

__all__ = ["relay"]


@app.command()
def relay(
    seconds: float = typer.Option(
        0.0, "--seconds", min=0.0, help="Stop after this many seconds (0: until a signal)."
    ),
    modules: list[str] = typer.Option(  # noqa: B008 - typer's declaration style
        [],
        "--import",
        help="Import this module first (repeatable): registers an application's event classes.",
    ),
) -> None:
    """Deliver undelivered outbox rows of ALPHA_DATA_CACHE_PREFIX until stopped.

    Rows holding events of classes this process does not know are left for a
    relay that does (logged at ERROR): pass ``--import myapp.events``.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise fail(f"cannot import {name!r} ({type(exc).__name__})") from None
    settings = load_settings()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    run(_relay(settings, seconds))


async def _relay(settings: Settings, seconds: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    db = Database(settings.model_copy(update={"outbox_relay": False}))
    await db.connect()
    try:
        db.start_relay()
        console.print(f"relaying outbox rows of prefix {db.outbox.prefix!r}", highlight=False)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds or None)
        figures = db.outbox.stats()
        console.print(
            f"delivered {figures.redelivered} rows; backlog {figures.backlog}", highlight=False
        )
    finally:
        await db.close()
