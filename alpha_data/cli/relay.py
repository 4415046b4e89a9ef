"""``alpha-data relay``: run the outbox relay of one cache prefix as its own process.

For deployments that turn the in-process relay off (``ALPHA_DATA_OUTBOX_RELAY=false``)
or want one more: it delivers the after-commit effects (cache invalidations,
events) that committing processes could not, until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import typer

from alpha_data.cli.common import app, console, load_settings, run
from alpha_data.database import Database
from alpha_data.settings import Settings

__all__ = ["relay"]


@app.command()
def relay(
    seconds: float = typer.Option(
        0.0, "--seconds", min=0.0, help="Stop after this many seconds (0: until a signal)."
    ),
) -> None:
    """Deliver undelivered outbox rows of ALPHA_DATA_CACHE_PREFIX until stopped."""
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
