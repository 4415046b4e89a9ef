"""alpha_data.retry: the start-up wait (``Database.connect``) without servers.

``wait_for_server`` is the loop ``connect`` runs; here its probe is a plain
coroutine function, so the retry, refusal and give-up rules are checked in
milliseconds without PostgreSQL.
"""

from __future__ import annotations

import asyncpg
import pytest

from alpha_data.errors import DatabaseUnavailableError
from alpha_data.retry import backoff_delay, wait_for_server

URL = "postgresql+asyncpg://ana:s3cret@db.internal:5432/my%20db"
WHERE = "db.internal:5432"


async def test_a_server_that_answers_after_two_failures_is_waited_for() -> None:
    calls = 0

    async def probe() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError("not yet")
        return "15.4"

    await wait_for_server(probe, timeout=10.0, url=URL)
    assert calls == 3


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (asyncpg.InvalidPasswordError, f"PostgreSQL at {WHERE} rejected the login"),
        (asyncpg.InvalidCatalogNameError, f"database 'my db' does not exist at {WHERE}"),
    ],
)
async def test_a_refusal_is_raised_at_once_without_retrying(
    error: type[Exception], reason: str
) -> None:
    calls = 0

    async def probe() -> str:
        nonlocal calls
        calls += 1
        raise error("refused by the server")

    with pytest.raises(DatabaseUnavailableError) as caught:
        await wait_for_server(probe, timeout=10.0, url=URL)
    assert calls == 1
    assert reason in str(caught.value)
    assert "ALPHA_DATA_DATABASE_URL" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None  # the driver's error is not chained


async def test_an_unreachable_server_gives_up_naming_where_and_attempts() -> None:
    calls = 0

    async def probe() -> str:
        nonlocal calls
        calls += 1
        raise OSError("connection refused")

    with pytest.raises(DatabaseUnavailableError) as caught:
        await wait_for_server(probe, timeout=0.3, url=URL)
    message = str(caught.value)
    assert f"cannot reach PostgreSQL at {WHERE} after {calls} attempts (OSError)" in message
    assert calls >= 2  # it retried before giving up


def test_backoff_grows_with_the_attempt_and_is_capped() -> None:
    for attempt in range(1, 12):
        delays = [backoff_delay(attempt) for _ in range(50)]
        assert all(0 <= d <= min(2.0, 0.05 * 2**attempt) for d in delays)
