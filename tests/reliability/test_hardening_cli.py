"""CLI commands that need the schema, run on a database that was never migrated.

Before: ``error: database error (SQLSTATE 42P01)``. Now one line that names
the fix, and a non-zero exit status; the database stays untouched.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from alpha_data.cli.common import SCHEMA_MISSING_MESSAGE
from tests.reliability.tools import Tally, admin_connection

ROOT = Path(__file__).resolve().parents[2]


async def _cli(url: str, *args: str) -> tuple[int, str]:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        ALPHA_DATA_DATABASE_URL=url,
        ALPHA_DATA_REDIS_URL="memory://",
        ALPHA_DATA_CONNECT_TIMEOUT="5",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from alpha_data.cli import main; main()",  # the `alpha-data` entry point
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return int(proc.returncode or 0), (out + err).decode(errors="replace")


@pytest.mark.parametrize(
    "args", [("demo",), ("seed", "--users", "1", "--portfolios", "1", "--metrics", "0")]
)
async def test_commands_on_an_unmigrated_database_say_run_migrate(
    fresh_database: str, tally: Tally, args: tuple[str, ...]
) -> None:
    code, out = await _cli(fresh_database, *args)
    assert code != 0
    assert SCHEMA_MISSING_MESSAGE in " ".join(out.split()), out[-2000:]
    assert "SQLSTATE" not in out and "Traceback" not in out
    async with admin_connection(fresh_database) as conn:
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'alphapulse')"
        )
    assert tables == 0
    tally.case("cli on unmigrated database")
