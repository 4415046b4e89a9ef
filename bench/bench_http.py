"""The example API under 64 concurrent keep-alive connections (wrk on loopback).

Library routes vs raw-asyncpg twins in the same FastAPI app (bench/http_app.py),
one uvicorn worker, interleaved runs; ratio = our requests/s over raw
requests/s (goal >= 0.8). wrk comes from Debian's package, installed here
when missing (root); without it the rows say so instead of failing the run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import httpx

from alpha_data import Database, Settings
from alpha_data.models import Portfolio, Position, User
from bench.harness import Result
from bench.setup import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 64
RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")


def ensure_wrk() -> str | None:
    """The wrk binary, installing Debian's package once if we may."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False}
    if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], **quiet)
    return shutil.which("wrk")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _seed(url: str, prefix: str) -> tuple[int, int]:
    settings = Settings(database_url=url, redis_url=REDIS_URL, cache_prefix=prefix, _env_file=None)  # type: ignore[call-arg]
    async with Database(settings) as db, db.unit_of_work() as uow:
        user = await uow.users.add(User(username="http", email="http@x.io", password_hash="x"))
        portfolio = await uow.portfolios.add(Portfolio(name="http"))
        for i in range(20):
            await uow.portfolios.add_position(
                Position(
                    portfolio_id=portfolio.id,
                    symbol=f"S{i:02d}",
                    quantity=Decimal("3"),
                    entry_price=Decimal("10"),
                )
            )
        await uow.commit()
        return user.id, portfolio.id


async def _serve(url: str, prefix: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ALPHA_DATA_DATABASE_URL": url,
        "ALPHA_DATA_REDIS_URL": REDIS_URL,
        "ALPHA_DATA_CACHE_PREFIX": prefix,
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "uvicorn", "bench.http_app:app", "--port", str(port)]
    server = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server, not awaited)
        [*command, "--log-level", "warning", "--no-access-log"], env=env, cwd=ROOT
    )
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if server.poll() is not None:
                break
            try:
                await client.get(f"http://127.0.0.1:{port}/health")
                return server
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    server.kill()
    raise RuntimeError("uvicorn did not start")


def _wrk(wrk: str, url: str, seconds: int) -> float:
    command = [wrk, "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = RPS.search(out)
    if not found:
        raise RuntimeError(f"wrk printed no Requests/sec: {out[-300:]}")
    return float(found.group(1))


def _row(name: str, ours: list[float], raw: list[float]) -> Result:
    mine, theirs = statistics.median(ours), statistics.median(raw)
    ratio = mine / theirs
    return Result(
        name=f"HTTP {name}, {CONNECTIONS} keep-alive connections",
        baseline="raw-asyncpg handler in the same FastAPI app",
        ours_median_ms=1000 / mine,
        ours_p95_ms=float("nan"),
        baseline_median_ms=1000 / theirs,
        baseline_p95_ms=float("nan"),
        ratio=ratio,
        goal=">= 0.8x requests/s",
        met=ratio >= 0.8,
        note=f"{mine:,.0f} vs {theirs:,.0f} requests/s (ms = 1/throughput)",
    )


async def run(url: str, *, quick: bool) -> list[Result]:
    """Requests/s of two library routes against their raw twins."""
    wrk = await asyncio.to_thread(ensure_wrk)
    if wrk is None:
        return []
    prefix = f"bench:http:{uuid.uuid4().hex[:8]}"
    user_id, portfolio_id = await _seed(url, prefix)
    port = _free_port()
    server = await _serve(url, prefix, port)
    base = f"http://127.0.0.1:{port}"
    pairs = {
        "GET cached portfolio (20 positions)": (
            f"{base}/portfolios/{portfolio_id}",
            f"{base}/raw/portfolios/{portfolio_id}",
        ),
        "GET user by id (cached)": (f"{base}/bench/users/{user_id}", f"{base}/raw/users/{user_id}"),
    }
    seconds, rounds = (1, 1) if quick else (3, 3)
    results = []
    try:
        for name, (ours_url, raw_url) in pairs.items():
            await asyncio.to_thread(_wrk, wrk, ours_url, 1)  # warm: fills the cache
            ours: list[float] = []
            raw: list[float] = []
            for _ in range(rounds):
                ours.append(await asyncio.to_thread(_wrk, wrk, ours_url, seconds))
                raw.append(await asyncio.to_thread(_wrk, wrk, raw_url, seconds))
            results.append(_row(name, ours, raw))
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 10)
    return results
