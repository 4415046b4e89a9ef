"""Run every benchmark, print the table, write bench/results/latest.json.

``python -m bench.run [--quick]`` (``make bench`` / ``alpha-data bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy
from rich.console import Console
from rich.table import Table

from bench import bench_repositories
from bench.harness import Result
from bench.setup import REDIS_URL, SERVER_URL, bench_database, dsn

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


async def _server_version() -> str:
    conn = await asyncpg.connect(dsn(SERVER_URL))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _modules() -> list[Any]:
    """Benchmark modules present (each has an ``async run(...)``)."""
    import importlib

    found: list[Any] = [bench_repositories]
    for name in (
        "bench.bench_cache",
        "bench.bench_metrics",
        "bench.bench_services",
        "bench.bench_observability",
        "bench.bench_outbox",
        "bench.bench_events",
        "bench.bench_load",
        "bench.bench_http",
    ):
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError:
            continue
    return found


def _from_dict(row: dict[str, Any]) -> Result:
    """Rows reported as dicts (cache, metrics) become Results."""
    goal = row.get("goal", "report")
    limit = float(goal) if isinstance(goal, (int, float)) else None
    if limit is None and (found := re.search(r"<=\s*([0-9.]+)", str(goal))):
        limit = float(found.group(1))
    ratio = float(row["ratio"])
    return Result(
        name=str(row["name"]),
        baseline=str(row.get("baseline", "raw driver")),
        ours_median_ms=float(row["ours_median_ms"]),
        ours_p95_ms=float(row.get("ours_p95_ms", float("nan"))),
        baseline_median_ms=float(row["baseline_median_ms"]),
        baseline_p95_ms=float(row.get("baseline_p95_ms", float("nan"))),
        ratio=ratio,
        goal=str(goal) if isinstance(goal, str) else f"<= {limit}x",
        met=None if limit is None else ratio <= limit,
        note=str(row.get("note", "")),
    )


async def _run_module(module: Any, *, quick: bool) -> list[Result]:
    async with bench_database() as url:
        rows = await module.run(url, quick=quick)
    return [r if isinstance(r, Result) else _from_dict(r) for r in rows]


async def run_all(*, quick: bool) -> list[Result]:
    results: list[Result] = []
    for module in _modules():
        results.extend(await _run_module(module, quick=quick))
    return results


def print_table(results: list[Result], console: Console) -> None:
    table = Table(title="alpha_data vs raw drivers (ms per operation, medians)")
    for column in ("benchmark", "ours", "p95", "baseline", "p95", "ratio", "goal", "met"):
        table.add_column(column)
    for r in results:
        met = "-" if r.met is None else ("[green]yes[/]" if r.met else "[red]no[/]")
        table.add_row(
            f"{r.name}\n[dim]vs {r.baseline}[/]",
            f"{r.ours_median_ms:.3f}",
            f"{r.ours_p95_ms:.3f}",
            f"{r.baseline_median_ms:.3f}",
            f"{r.baseline_p95_ms:.3f}",
            f"{r.ratio:.2f}x",
            r.goal,
            met,
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = asyncio.run(run_all(quick=args.quick))
    console = Console(width=max(Console().width, 150))
    print_table(results, console)
    report = {
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "versions": {
            "python": platform.python_version(),
            "sqlalchemy": sqlalchemy.__version__,
            "asyncpg": asyncpg.__version__,
            "postgresql": asyncio.run(_server_version()),
            "redis_url": REDIS_URL,
        },
        "results": [r.as_dict() for r in results],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    console.print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
