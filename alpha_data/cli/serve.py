"""``alpha-data serve`` (the example API under uvicorn) and ``alpha-data bench``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from alpha_data.cli.common import app, fail

__all__ = ["bench", "serve"]

_REPO = Path(__file__).resolve().parent.parent.parent


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    reload: bool = typer.Option(False, help="Restart on code changes (development)."),
) -> None:
    """Run the example API (examples/api.py) with uvicorn."""
    try:
        import uvicorn
    except ImportError:
        raise fail("uvicorn is not installed: pip install 'alpha_data[web]'") from None
    if str(_REPO) not in sys.path and (_REPO / "examples" / "api.py").exists():
        sys.path.insert(0, str(_REPO))
    uvicorn.run("examples.api:app", host=host, port=port, reload=reload)


@app.command("bench")
def bench(quick: bool = typer.Option(False, help="Small sizes, under a minute.")) -> None:
    """Run the benchmarks in bench/ (from a checkout of the repository)."""
    if not (_REPO / "bench" / "run.py").exists():
        raise fail("bench/ is not here: run `alpha-data bench` from a checkout of alpha_data")
    command = [sys.executable, "-m", "bench.run", *(["--quick"] if quick else [])]
    raise typer.Exit(subprocess.call(command, cwd=_REPO))  # noqa: S603 - our own module
