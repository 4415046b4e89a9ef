"""Awaiting without losing a cancellation, on every supported Python (3.10-3.13).

Before 3.12, ``asyncio.wait_for`` returns the inner result when its caller is
cancelled in the loop iteration in which that result arrives: the
cancellation is gone (cpython gh-86296, bpo-42130). A loop that awaits such a
call (a stream consumer reading until told to stop) then never stops, and
whoever cancelled it and waits for it (``asyncio.wait_for`` itself, on a
timeout) waits forever. Two tools instead:

* ``deadline(seconds)``: ``async with deadline(s):`` bounds a block in the
  current task (no inner task, no result that can outrun the cancel):
  ``asyncio.timeout`` on 3.11+, ``async_timeout.timeout`` (redis-py's own
  dependency there) on 3.10. Expiry raises ``asyncio.TimeoutError``.
* ``guarded(coro)``: runs ``coro`` in a task of its own and awaits it through
  ``asyncio.shield``, so a cancellation of the caller always raises
  ``CancelledError`` in the caller, whatever the code below does with it
  (a client library turning it into a lost connection, a timeout racing it).
  The inner task is then cancelled and given ``grace`` seconds to finish
  (to release its connection) before the caller's cancellation goes on.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, cast

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover - exercised by the Python 3.10 leg
    # not installed on 3.11+, where mypy (python_version 3.10) may run
    from async_timeout import timeout as _timeout  # type: ignore[import-not-found, unused-ignore]

__all__ = ["deadline", "guarded"]

T = TypeVar("T")


def deadline(seconds: float) -> AbstractAsyncContextManager[Any]:
    """``async with deadline(s):`` raises ``asyncio.TimeoutError`` after ``s`` seconds."""
    return cast("AbstractAsyncContextManager[Any]", _timeout(seconds))


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark an abandoned task's outcome as seen (no "exception never retrieved")."""
    if not task.cancelled():
        task.exception()


async def guarded(coro: Coroutine[Any, Any, T], *, grace: float = 1.0) -> T:
    """``await coro``, except that the caller's cancellation can never be swallowed."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_retrieve)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.wait({task}, timeout=grace)
        raise
