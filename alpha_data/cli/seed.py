"""``alpha-data seed``: realistic sample data through the bulk paths; safe to re-run.

Rows are named (``seed_user_00001``, ``Seed Portfolio 0001``, external ids
``seed-<portfolio>-<n>``), so a second run only adds what is missing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import typer
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from alpha_data.cli.common import app, console, load_settings, run
from alpha_data.database import Database
from alpha_data.models import Portfolio, Position, Role, Side, Trade, User
from alpha_data.repositories.metrics import MetricPoint
from alpha_data.security import hash_password
from alpha_data.settings import Settings

__all__ = ["seed", "seed_data"]

#: Symbols with a plausible price to start the random walk from.
SYMBOLS: dict[str, Decimal] = {
    "AAPL": Decimal("190"),
    "MSFT": Decimal("415"),
    "NVDA": Decimal("120"),
    "AMZN": Decimal("185"),
    "GOOGL": Decimal("170"),
    "META": Decimal("500"),
    "TSLA": Decimal("250"),
    "JPM": Decimal("200"),
    "V": Decimal("280"),
    "XOM": Decimal("115"),
    "BRK.B": Decimal("410"),
    "UNH": Decimal("520"),
}
SEED_PASSWORD = "seed-data-password"  # noqa: S105 - sample accounts only
CENT = Decimal("0.01")
EIGHT = Decimal("0.00000001")


def _names(prefix: str, n: int, width: int) -> list[str]:
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


async def _seed_users(db: Database, n: int, progress: Progress) -> int:
    wanted = _names("seed_user_", n, 5)
    async with db.unit_of_work() as uow:
        rows = await uow.session.execute(select(User.username).where(User.username.in_(wanted)))
        existing = set(rows.scalars())
        missing = [name for name in wanted if name not in existing]
        task = progress.add_task("users", total=len(missing))
        if missing:
            hashed = await hash_password(SEED_PASSWORD)  # one hash shared by sample accounts
            roles = [Role.TRADER, Role.VIEWER, Role.VIEWER, Role.ADMIN]
            await uow.users.add_many(
                User(
                    username=name,
                    email=f"{name}@alphapulse.example",
                    password_hash=hashed,
                    role=roles[i % len(roles)],
                )
                for i, name in enumerate(missing)
            )
        await uow.commit()
        progress.update(task, completed=len(missing))
    return len(missing)


def _walk(rng: random.Random, price: Decimal) -> Decimal:
    step = Decimal(str(round(rng.gauss(0, 0.01), 6)))
    return max(Decimal("1"), (price * (1 + step)).quantize(CENT))


def _trades_for(rng: random.Random, portfolio_id: int, start: int, count: int) -> Iterator[Trade]:
    """Mostly buys with some sells, never selling more than held."""
    held: dict[str, Decimal] = {}
    prices = dict(SYMBOLS)
    now = datetime.now(timezone.utc)
    for n in range(start, start + count):
        symbol = rng.choice(list(SYMBOLS))
        prices[symbol] = _walk(rng, prices[symbol])
        quantity = Decimal(rng.randint(1, 50))
        side = Side.BUY
        if held.get(symbol, Decimal(0)) >= quantity and rng.random() < 0.3:
            side = Side.SELL
        held[symbol] = held.get(symbol, Decimal(0)) + (quantity if side is Side.BUY else -quantity)
        yield Trade(
            portfolio_id=portfolio_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=prices[symbol],
            fees=(prices[symbol] * quantity * Decimal("0.0005")).quantize(EIGHT),
            executed_at=now - timedelta(minutes=(start + count - n) * 7),
            external_id=f"seed-{portfolio_id}-{n:06d}",
        )


def _positions(portfolio_id: int, trades: list[Trade]) -> list[Position]:
    """Net positions (weighted average entry) of a list of trades."""
    book: dict[str, tuple[Decimal, Decimal]] = {}
    for t in sorted(trades, key=lambda t: t.executed_at):
        qty, avg = book.get(t.symbol, (Decimal(0), Decimal(0)))
        if t.side is Side.BUY:
            total = qty + t.quantity
            avg = ((qty * avg + t.quantity * t.price) / total).quantize(EIGHT, ROUND_HALF_EVEN)
            qty = total
        else:
            qty -= t.quantity
        book[t.symbol] = (qty, avg)
    return [
        Position(portfolio_id=portfolio_id, symbol=s, quantity=q, entry_price=a, current_price=a)
        for s, (q, a) in sorted(book.items())
        if q > 0
    ]


async def _seed_portfolios(
    db: Database, n: int, trades: int, progress: Progress
) -> tuple[int, int]:
    wanted = _names("Seed Portfolio ", n, 4)
    created = trades_added = 0
    task = progress.add_task("portfolios + trades", total=n)
    for name in wanted:
        rng = random.Random(name)  # noqa: S311 - sample data, reproducible
        async with db.unit_of_work() as uow:
            portfolio = (
                await uow.session.execute(select(Portfolio).where(Portfolio.name == name))
            ).scalar_one_or_none()
            if portfolio is None:
                portfolio = await uow.portfolios.add(
                    Portfolio(name=name, description="sample data from alpha-data seed")
                )
                created += 1
            have = await uow.portfolios.count_trades(portfolio.id)
            if have < trades:
                new = list(_trades_for(rng, portfolio.id, have, trades - have))
                await uow.portfolios.add_trades(new)
                trades_added += len(new)
                all_trades = (
                    (
                        await uow.session.execute(
                            select(Trade).where(Trade.portfolio_id == portfolio.id)
                        )
                    )
                    .scalars()
                    .all()
                )
                for old in await uow.portfolios.list_positions(portfolio.id):
                    await uow.portfolios.delete_position(old)
                for position in _positions(portfolio.id, list(all_trades)):
                    await uow.portfolios.add_position(position)
            await uow.commit()
        progress.advance(task)
    return created, trades_added


async def _seed_metrics(db: Database, n: int, progress: Progress) -> int:
    async with db.unit_of_work() as uow:
        have = await uow.metrics.count("seed_latency_ms") if n else 0
        missing = max(0, n - have)
        task = progress.add_task("metrics", total=missing)
        if missing:
            rng = random.Random(7)  # noqa: S311
            end = datetime.now(timezone.utc)

            def points() -> Iterator[MetricPoint]:
                for i in range(missing):
                    yield MetricPoint(
                        end - timedelta(seconds=(missing - i) * 30),
                        "seed_latency_ms",
                        abs(rng.gauss(12, 4)),
                        {"service": rng.choice(["api", "pricer", "risk"])},
                    )
                    if i % 10_000 == 0:
                        progress.update(task, completed=i)

            await uow.metrics.insert_many(points())
        await uow.commit()
        progress.update(task, completed=missing)
    return missing


async def _summary(db: Database) -> Table:
    table = Table("table", "rows")
    async with db.unit_of_work(read_only=True) as uow:
        for label, model in (
            ("users", User),
            ("portfolios", Portfolio),
            ("positions", Position),
            ("trades", Trade),
        ):
            count = (
                await uow.session.execute(select(func.count()).select_from(model))
            ).scalar_one()
            table.add_row(label, str(count))
        table.add_row("metrics (seed_latency_ms)", str(await uow.metrics.count("seed_latency_ms")))
    return table


async def seed_data(
    settings: Settings, *, users: int, portfolios: int, trades: int, metrics: int
) -> None:
    """Load sample data (only what is missing) and print what the database holds."""
    async with Database(settings) as db:
        with Progress(console=console, transient=True) as progress:
            added_users = await _seed_users(db, users, progress)
            added_portfolios, added_trades = await _seed_portfolios(
                db, portfolios, trades, progress
            )
            added_metrics = await _seed_metrics(db, metrics, progress)
        console.print(
            f"seed: +{added_users} users, +{added_portfolios} portfolios, +{added_trades} trades, "
            f"+{added_metrics} metric points"
        )
        console.print(await _summary(db))


@app.command("seed")
def seed(
    users: int = typer.Option(20, min=0, max=100_000, help="Sample users."),
    portfolios: int = typer.Option(5, min=0, max=10_000, help="Sample portfolios."),
    trades: int = typer.Option(200, min=0, max=1_000_000, help="Trades per portfolio."),
    metrics: int = typer.Option(10_000, min=0, max=10_000_000, help="Metric points."),
) -> None:
    """Load realistic sample data with the bulk paths (re-running adds only what is missing)."""
    run(
        seed_data(
            load_settings(), users=users, portfolios=portfolios, trades=trades, metrics=metrics
        )
    )
