"""A redis-server of a test's own that can be killed and restarted on the same port.

Used by the stream tests to take Redis away under a consumer or a deliver
(the shared server is never stopped, paused or flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_asyncio

__all__ = ["ThrowawayRedis", "throwaway_redis"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayRedis:
    """One redis-server process on a free port; ``kill()`` (SIGKILL) and ``start()`` again.

    With ``appendonly`` it keeps an AOF (fsync always) in a temporary
    directory, so a restart keeps its streams and consumer groups.
    """

    def __init__(self, *, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("needs a redis-server binary for a throwaway server")
        self.binary = binary
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendonly = appendonly
        self.dir = tempfile.mkdtemp(prefix="alpha_streams_redis_")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--dir", self.dir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = redis_asyncio.Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            for _ in range(200):
                with contextlib.suppress(Exception):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
            raise RuntimeError("the throwaway redis-server did not start")
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final save) and reap it."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self.proc = None

    async def stop(self) -> None:
        """Kill the server and remove its directory."""
        await self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def throwaway_redis(*, appendonly: bool = False) -> AsyncIterator[ThrowawayRedis]:
    """A started ThrowawayRedis, stopped (and its files removed) at the end."""
    server = ThrowawayRedis(appendonly=appendonly)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
