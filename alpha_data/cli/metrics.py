"""``alpha-data metrics ensure-partitions``: create the day partitions ahead of time."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import typer

from alpha_data.cli.common import console, load_settings, run
from alpha_data.database import Database
from alpha_data.services.metrics import ensure_metric_partitions
from alpha_data.settings import Settings

__all__ = ["ensure_partitions", "metrics_app"]

metrics_app = typer.Typer(no_args_is_help=True)


@metrics_app.callback()
def metrics_group() -> None:
    """Maintain the alphapulse.metrics time series (day partitions)."""


async def ensure_partitions(settings: Settings, ahead: int) -> list[str]:
    """Create the day partitions from today (UTC) through ``ahead`` days ahead; return new names."""
    today = datetime.now(timezone.utc).date()
    start = datetime.combine(today, time.min, tzinfo=timezone.utc)
    end = start + timedelta(days=ahead + 1)
    async with Database(settings) as db:
        return await ensure_metric_partitions(db, start, end)


@metrics_app.command("ensure-partitions")
def ensure_partitions_command(
    ahead: int = typer.Option(
        7,
        "--ahead",
        min=0,
        max=3650,
        help="Days ahead of today (UTC) to cover, besides today.",
    ),
) -> None:
    """Create the missing day partitions for today and AHEAD days (idempotent; run it daily)."""
    created = run(ensure_partitions(load_settings(), ahead))
    for name in created:
        console.print(f"created alphapulse.{name}")
    console.print(f"{len(created)} partitions created (today + {ahead} days covered)")
