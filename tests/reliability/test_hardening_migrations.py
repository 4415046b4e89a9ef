"""Migrations under concurrency and downgrades that would drop data.

* Two ``alembic upgrade head`` processes started together on a new database:
  env.py's advisory lock makes the second wait; it then finds the database at
  head and exits 0 (before the lock: 3 of 5 rounds failed on CREATE SCHEMA).
* A downgrade whose tables hold rows refuses, names them and drops nothing,
  unless run with ``-x allow_data_loss=true``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from alembic import command

from alpha_data.migration_safety import DataLossRefused
from alpha_data.migrations_support import library_head
from tests.reliability.tools import Tally, admin_connection
from tests.support import alembic_config, create_database, drop_database, migrate, run_id

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = [sys.executable, "-m", "alembic"]
ROUNDS = 3


async def _alembic(url: str, *args: str) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        *ALEMBIC,
        "-x",
        f"url={url}",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return int(proc.returncode or 0), out.decode(errors="replace")


async def _version(url: str) -> list[str]:
    async with admin_connection(url) as conn:
        return [r[0] for r in await conn.fetch("SELECT version_num FROM alembic_version")]


async def test_two_upgrades_at_once_on_a_new_database_both_succeed(tally: Tally) -> None:
    for _ in range(ROUNDS):
        name = f"alpha_harden_{run_id()}"
        url = await asyncio.to_thread(create_database, name)
        try:
            results = await asyncio.gather(
                _alembic(url, "upgrade", "head"), _alembic(url, "upgrade", "head")
            )
            for code, out in results:
                assert code == 0, out[-2000:]
            assert await _version(url) == [library_head()]
            tally.case("concurrent-upgrade-round")
        finally:
            await asyncio.to_thread(drop_database, name)


async def test_downgrade_with_metric_rows_refuses_and_drops_nothing(fresh_database: str) -> None:
    url = fresh_database
    await asyncio.to_thread(migrate, url)
    async with admin_connection(url) as conn:
        await conn.execute(
            "INSERT INTO alphapulse.metrics(time, metric_name, value, labels) "
            "VALUES (now(), 'm', 1.0, '{}')"
        )
    code, out = await _alembic(url, "downgrade", "0001")
    assert code != 0
    assert "alphapulse.metrics" in out and "allow_data_loss=true" in out
    assert await _version(url) == ["0002"]
    async with admin_connection(url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM alphapulse.metrics") == 1

    code, out = await _alembic(url, "-x", "allow_data_loss=true", "downgrade", "0001")
    assert code == 0, out[-2000:]
    assert await _version(url) == ["0001"]
    async with admin_connection(url) as conn:
        assert await conn.fetchval("SELECT to_regclass('alphapulse.metrics')") is None


async def test_downgrade_to_base_refuses_while_a_user_exists(fresh_database: str) -> None:
    url = fresh_database
    await asyncio.to_thread(migrate, url)
    async with admin_connection(url) as conn:
        await conn.execute(
            "INSERT INTO users(username, email, password_hash) VALUES ('ana', 'a@x.io', 'h')"
        )
    cfg = alembic_config(url)
    with pytest.raises(DataLossRefused, match="users"):
        await asyncio.to_thread(command.downgrade, cfg, "base")
    async with admin_connection(url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 1
    # metrics was empty: its revision went down; the users revision refused.
    assert await _version(url) == ["0001"]
    cfg.cmd_opts = Namespace(x=["allow_data_loss=true"])
    await asyncio.to_thread(command.downgrade, cfg, "base")
    async with admin_connection(url) as conn:
        assert await conn.fetchval("SELECT to_regclass('users')") is None


async def test_empty_tables_downgrade_without_the_flag(fresh_database: str) -> None:
    url = fresh_database
    await asyncio.to_thread(migrate, url)
    await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
    async with admin_connection(url) as conn:
        assert await conn.fetchval("SELECT to_regclass('users')") is None
