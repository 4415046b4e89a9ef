"""Hostile request sizes against the example API: 413 before the body is read whole.

Before: a 100 MB body without credentials was read completely (RSS 90 → 300
MB) and answered 422 after 0.86 s. The generator bodies below count how many
bytes the server actually pulled, so "before it is read whole" is measured,
not assumed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from alpha_data import Database
from examples.api import create_app
from examples.body_limit import MAX_BODY_BYTES
from tests.reliability.tools import Tally

HUNDRED_MB = 100 * 1024 * 1024
CHUNK = 64 * 1024


class Feed:
    """An async body of ``total`` bytes that records how much was pulled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            n = min(CHUNK, self.total - self.pulled)
            self.pulled += n
            yield b" " * n


@pytest.fixture
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(database=db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def _is_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/users", "/auth/keys", "/portfolios", "/portfolios/1/trades"])
async def test_chunked_body_without_length_stops_at_the_limit(
    client: httpx.AsyncClient, tally: Tally, path: str
) -> None:
    feed = Feed(HUNDRED_MB)
    response = await client.post(path, content=feed, headers={"content-type": "application/json"})
    _is_413(response)
    assert feed.pulled <= MAX_BODY_BYTES + CHUNK, f"read {feed.pulled} bytes of {HUNDRED_MB}"
    tally.case("oversized chunked body")


async def test_declared_length_over_the_limit_is_refused_unread(
    client: httpx.AsyncClient, tally: Tally
) -> None:
    feed = Feed(HUNDRED_MB)
    response = await client.post(
        "/users",
        content=feed,
        headers={"content-type": "application/json", "content-length": str(HUNDRED_MB)},
    )
    _is_413(response)
    assert feed.pulled <= CHUNK  # at most what the transport primed; never the body
    one_over = b" " * (MAX_BODY_BYTES + 1)
    _is_413(await client.post("/users", content=one_over))
    tally.case("oversized declared body", 2)


@pytest.mark.parametrize("length", ["abc", "-1", "1, 2"])
async def test_malformed_content_length_is_refused(client: httpx.AsyncClient, length: str) -> None:
    response = await client.post(
        "/users",
        content=b"{}",
        headers={"content-length": length, "content-type": "application/json"},
    )
    _is_413(response)


async def test_bodies_within_the_limit_still_work(client: httpx.AsyncClient) -> None:
    padded = (
        b'{"username": "ana_limit", "email": "ana_limit@x.io", "password": "pw-Long-enough-42"}'
    )
    at_limit = padded + b" " * (MAX_BODY_BYTES - len(padded))
    response = await client.post(
        "/users", content=at_limit, headers={"content-type": "application/json"}
    )
    assert response.status_code != 413
    assert response.status_code < 500, response.text[:300]
    chunked = Feed(MAX_BODY_BYTES)
    response = await client.post(
        "/users", content=chunked, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422  # all spaces: read whole (it fits), then invalid JSON
    assert chunked.pulled == MAX_BODY_BYTES
