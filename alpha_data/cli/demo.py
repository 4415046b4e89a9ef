"""``alpha-data demo``: a short walk through every capability, safe to re-run."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import typer
from rich.console import Console
from rich.table import Table

from alpha_data import services
from alpha_data.cli.common import app, console, resolve_settings, run
from alpha_data.cli.embedded import prepare_demo
from alpha_data.cli.fallback import EMBEDDED_ENV
from alpha_data.database import Database
from alpha_data.errors import ConflictError, DataLayerError, InvalidDataError
from alpha_data.events import TradeExecuted
from alpha_data.models import Portfolio, User
from alpha_data.settings import Settings

__all__ = ["demo"]

DEMO_USER = "demo_trader"
DEMO_EMAIL = "demo.trader@alphapulse.example"
DEMO_PASSWORD = "correct horse battery staple"  # noqa: S105 - a published demo account


def _step(out: Console, title: str) -> None:
    out.print(f"\n[bold cyan]▸ {title}[/]")


async def _user(db: Database, out: Console) -> User:
    try:
        user = await services.create_user(
            db, username=DEMO_USER, email=DEMO_EMAIL, password=DEMO_PASSWORD, role="trader"
        )
        out.print(f"  created user [bold]{user.username}[/] (id {user.id}, role {user.role})")
    except ConflictError:
        user = await services.authenticate(db, username=DEMO_USER, password=DEMO_PASSWORD)
        out.print(f"  user [bold]{user.username}[/] exists (id {user.id}); password verified")
    key, raw = await services.issue_api_key(
        db,
        user_id=user.id,
        name=f"demo {datetime.now(timezone.utc):%H:%M:%S}",
        permissions=["trades:write", "portfolios:read"],
    )
    checked = await services.authenticate_api_key(db, raw, permission="trades:write")
    out.print(
        f"  API key {key.prefix}.…  (shown once, stored as a hash) → authenticated key "
        f"{checked.id} with {checked.permissions}"
    )
    return user


async def _trades(db: Database, out: Console, portfolio: Portfolio, run_tag: str) -> None:
    fills = [
        ("buy", Decimal("10"), Decimal("190.00")),
        ("buy", Decimal("5"), Decimal("202.50")),
        ("sell", Decimal("6"), Decimal("205.00")),
    ]
    table = Table("side", "qty", "price", "position qty", "avg entry")
    for side, qty, price in fills:
        await services.record_trade(
            db,
            portfolio_id=portfolio.id,
            symbol="AAPL",
            side=side,
            quantity=qty,
            price=price,
            external_id=f"demo-{run_tag}-{side}-{qty}",
        )
        current = await services.get_portfolio_with_positions(db, portfolio.id)
        assert current is not None
        held = {p.symbol: p for p in current.positions}.get("AAPL")
        table.add_row(
            side,
            str(qty),
            str(price),
            str(held.quantity) if held else "0 (closed)",
            str(held.entry_price) if held else "-",
        )
    out.print(table)
    repeat = await services.record_trade(
        db,
        portfolio_id=portfolio.id,
        symbol="AAPL",
        side="buy",
        quantity=Decimal("10"),
        price=Decimal("190.00"),
        external_id=f"demo-{run_tag}-buy-10",
    )
    out.print(f"  repeating external id demo-{run_tag}-buy-10 returns trade {repeat.id}: no change")
    try:
        await services.record_trade(
            db,
            portfolio_id=portfolio.id,
            symbol="AAPL",
            side="sell",
            quantity=Decimal("1000"),
            price=Decimal("1"),
        )
    except InvalidDataError as exc:
        out.print(f"  selling more than held → InvalidDataError: {exc.message}")


async def _cached_read(db: Database, out: Console, portfolio: Portfolio) -> None:
    await db.cache.clear()
    for label in ("miss (PostgreSQL)", "hit (Redis)"):
        started = time.perf_counter()
        loaded = await services.get_cached_portfolio(db, portfolio.id)
        ms = (time.perf_counter() - started) * 1000
        count = len(loaded.positions) if loaded is not None else 0
        out.print(f"  get_cached_portfolio: {label:<18} {ms:7.2f} ms, {count} position(s)")
        await db.cache.drain()  # the miss stored its result in the background
    stats = db.cache.stats()
    out.print(f"  cache stats: hits={stats.hits} misses={stats.misses} errors={stats.errors}")


async def _event(db: Database, out: Console, portfolio: Portfolio) -> None:
    received: asyncio.Queue[TradeExecuted] = asyncio.Queue()
    ready = asyncio.Event()

    async def listen() -> None:
        stream = db.events.subscribe(TradeExecuted)
        ready.set()
        async for event in stream:
            await received.put(event)

    task = asyncio.create_task(listen())
    await ready.wait()
    await asyncio.sleep(0.2)  # let the SUBSCRIBE reach Redis
    trade = await services.record_trade(
        db,
        portfolio_id=portfolio.id,
        symbol="MSFT",
        side="buy",
        quantity=Decimal("3"),
        price=Decimal("415.10"),
    )
    try:
        event = await asyncio.wait_for(received.get(), 5)
        out.print(
            f"  subscriber received TradeExecuted(trade_id={event.trade_id}, {event.side} "
            f"{event.quantity} {event.symbol} @ {event.price}) for trade {trade.id}"
        )
    except asyncio.TimeoutError:
        out.print("  [yellow]no event within 5 s (is Redis reachable?)[/]")
    finally:
        task.cancel()


async def _metrics(db: Database, out: Console, portfolio: Portfolio) -> None:
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=6)
    values = {portfolio.id: Decimal("100000")}
    for minutes in range(0, 6 * 60, 15):
        values = {portfolio.id: values[portfolio.id] * Decimal("1.0007")}
        await services.insert_portfolio_metrics_batch(
            db,
            {pid: v.quantize(Decimal("0.01")) for pid, v in values.items()},
            timestamp=start + timedelta(minutes=minutes),
        )
    async with db.unit_of_work(read_only=True) as uow:
        buckets = await uow.metrics.buckets(
            "portfolio_value",
            start,
            now,
            timedelta(hours=1),
            agg="last",
            labels={"portfolio_id": str(portfolio.id)},
        )
    table = Table("hour (UTC)", "portfolio_value (last)")
    for bucket in buckets:
        table.add_row(f"{bucket.time:%H:%M}", f"{bucket.value:,.2f}")
    out.print(table)


async def _alert(db: Database, out: Console) -> None:
    alert = await services.raise_alert(
        db,
        title="Drawdown above 5%",
        message="Demo Growth fell 5.2% intraday",
        severity="warning",
        source="risk",
        tags=("demo", "drawdown"),
    )
    acked = await services.acknowledge_alert(db, alert.id, by=DEMO_USER)
    out.print(
        f"  alert {alert.id} raised ({alert.severity}) and acknowledged by "
        f"{acked.acknowledged_by} at {acked.acknowledged_at:%H:%M:%S}"
    )


async def _conflict(db: Database, out: Console) -> None:
    try:
        await services.create_user(
            db, username="someone_else", email=DEMO_EMAIL.upper(), password=DEMO_PASSWORD + "!"
        )
    except ConflictError as exc:
        out.print(f"  same email in other case → ConflictError: {exc.message}")


async def run_demo(settings: Settings, out: Console) -> None:
    """Every capability, one short step each."""
    async with Database(settings) as db:
        health = await db.health()
        out.print(
            f"[bold]alpha_data demo[/] — PostgreSQL {health.database.detail.get('server_version')}"
            f", cache {'ok' if health.cache.ok else 'degraded'}"
        )
        run_tag = f"{datetime.now(timezone.utc):%Y%m%d%H%M%S}"
        _step(out, "users and API keys")
        await _user(db, out)
        _step(out, "portfolio and trades (position math)")
        portfolio = await services.create_portfolio(
            db, name=f"Demo Growth {run_tag}", description="created by alpha-data demo"
        )
        out.print(f"  portfolio {portfolio.id} '{portfolio.name}'")
        await _trades(db, out, portfolio, run_tag)
        _step(out, "cached read")
        await _cached_read(db, out, portfolio)
        _step(out, "events")
        await _event(db, out, portfolio)
        _step(out, "metrics (hourly buckets)")
        await _metrics(db, out, portfolio)
        _step(out, "alerts")
        await _alert(db, out)
        _step(out, "conflicts are typed")
        await _conflict(db, out)
        out.print("\n[bold green]demo finished[/]")


@app.command("demo")
def demo(
    embedded: bool = typer.Option(
        False, "--embedded", help="Use the embedded PostgreSQL + Redis (the `embedded` extra)."
    ),
) -> None:
    """Walk through users, keys, trades, cache, events, metrics, alerts and conflicts.

    On the embedded servers (``--embedded``, or nothing configured and nothing answering) it
    first creates, migrates and seeds the database, as ``make demo`` does.
    """
    if embedded:
        os.environ[EMBEDDED_ENV] = "1"
    settings, servers = resolve_settings()
    if servers is not None:
        prepare_demo(settings, servers)
    try:
        run(run_demo(settings, console))
    except DataLayerError as exc:  # pragma: no cover - run() already formats these
        console.print(f"[red]{exc.message}[/]")
        raise
