"""Fixtures of the reliability suite (the root ``settings``, ``db``, ``real_db`` apply too).

* ``tally``: what the suite did (cases tried, faults injected, rows verified),
  printed at the end of the run by ``pytest_terminal_summary``.
* A suite-wide log capture: every ``alpha_data*`` logger, SQLAlchemy,
  asyncpg and redis-py at DEBUG, from the first test to the last. At the end
  of the suite every captured line, and every Redis key and value written
  under the run's prefix, is searched for the secrets the tests registered
  (passwords, API keys and their secrets, password and key hashes, URL
  passwords); a hit fails the run (as an error in the last test's teardown).
* Argon2 with tiny parameters for every test: the plugin's ``fast_hasher``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from tests.reliability.tools import (
    SECRETS,
    STORED_FORMS,
    TALLY,
    SessionLog,
    Tally,
    leaks,
    mask,
    truncate_all,
)
from tests.support import REDIS_URL

#: Loggers captured for the whole session, all at DEBUG.
CAPTURED_LOGGERS = ("alpha_data", "sqlalchemy", "asyncpg", "redis")


def is_sqlalchemy_row_log(name: str, template: str) -> bool:
    """SQLAlchemy's DEBUG echo of result rows (test_sqlalchemy_debug_row_logs_hold_no_hashes)."""
    return name.startswith("sqlalchemy.engine") and template.startswith("Row ")


def audit_lines(lines: list[tuple[str, str, str]]) -> list[str]:
    """Masked descriptions of every captured line that holds a registered secret.

    Row echoes are searched for plaintext secrets only: that they show stored
    hashes is the known leak pinned (strict xfail) by
    ``test_sqlalchemy_debug_row_logs_hold_no_hashes``.
    """
    plaintext = frozenset(SECRETS.values()) - STORED_FORMS
    found = []
    for name, template, text_ in lines:
        kinds = plaintext if is_sqlalchemy_row_log(name, template) else None
        hit = leaks(text_, kinds=kinds)
        if hit:
            found.append(f"{'/'.join(hit)} in log line: {mask(text_)[:300]}")
    return found


@pytest.fixture(scope="package")
def session_log() -> Iterator[SessionLog]:
    """Every record of the captured loggers while this package's tests run.

    The handler sits on the root logger (records propagate to it) with a filter,
    so the library's own loggers keep having no handlers.
    """
    handler = SessionLog()
    handler.addFilter(lambda record: record.name.split(".", 1)[0] in CAPTURED_LOGGERS)
    saved: list[tuple[logging.Logger, int]] = []
    for name in CAPTURED_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level in saved:
            logger.setLevel(level)


@pytest.fixture(scope="package", autouse=True)
async def _secret_audit(
    session_log: SessionLog, run_name: str, _alpha_data_redis_cleanup: None
) -> AsyncIterator[None]:
    """Spans the package's tests; at the end no registered secret may be in a log or in Redis."""
    yield
    found = audit_lines(session_log.lines)
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    keys = 0
    try:
        async for key in client.scan_iter(match=f"t{run_name}:*", count=500):
            keys += 1
            value: Any = await client.get(key) if await client.type(key) == b"string" else b""
            blob = key.decode("utf-8", "replace") + "\n" + (value or b"").decode("utf-8", "replace")
            hit = leaks(blob)
            if hit:
                found.append(f"{'/'.join(hit)} in Redis key {mask(key.decode('utf-8', 'replace'))}")
    finally:
        await client.aclose()
    TALLY.audit.update(
        log_lines=len(session_log.lines),
        sqlalchemy_row_lines=sum(is_sqlalchemy_row_log(n, t) for n, t, _ in session_log.lines),
        redis_keys=keys,
        secrets=len(SECRETS),
    )
    assert not found, "secrets leaked:\n" + "\n".join(found[:20])


@pytest.fixture
def tally() -> Tally:
    return TALLY


@pytest.fixture
async def truncate_after(database_url: str) -> AsyncIterator[None]:
    """Empty every table after a test that commits through Databases of its own."""
    yield
    await truncate_all(database_url)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY.any():
        return
    tr = terminalreporter
    tr.section("reliability: what was tried")

    def detail(counter: Any) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))

    tr.write_line(f"cases tried:     {sum(TALLY.cases.values()):6d}  ({detail(TALLY.cases)})")
    tr.write_line(f"faults injected: {sum(TALLY.faults.values()):6d}  ({detail(TALLY.faults)})")
    tr.write_line(f"rows verified:   {sum(TALLY.rows.values()):6d}  ({detail(TALLY.rows)})")
    if TALLY.checks:
        tr.write_line(f"state checks:    {sum(TALLY.checks.values()):6d}  ({detail(TALLY.checks)})")
    if TALLY.audit:
        a = TALLY.audit
        tr.write_line(
            f"secret audit:    {a['secrets']} secrets searched in {a['log_lines']} log lines "
            f"({a['sqlalchemy_row_lines']} SQLAlchemy row echoes) and {a['redis_keys']} Redis keys"
        )
