"""``guarded`` and ``deadline``: a caller's cancellation is never lost (no I/O involved)."""

from __future__ import annotations

import asyncio

import pytest

from alpha_data.cancellation import deadline, guarded


async def swallower(started: asyncio.Event, finished: asyncio.Event) -> str:
    """Code that swallows a cancellation, as a client library can."""
    started.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        return "swallowed"
    finally:
        finished.set()
    return "slept"


async def test_a_plain_await_loses_the_cancel_that_guarded_keeps() -> None:
    started, finished = asyncio.Event(), asyncio.Event()
    plain = asyncio.ensure_future(swallower(started, finished))
    await started.wait()
    plain.cancel()
    assert await plain == "swallowed"  # what the consumer suffered from

    started, finished = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(guarded(swallower(started, finished)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()  # the inner coroutine was cancelled and waited for


async def test_guarded_passes_results_and_errors_through() -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 7

    async def failure() -> int:
        await asyncio.sleep(0)
        raise ValueError("boom")

    assert await guarded(value()) == 7
    with pytest.raises(ValueError, match="boom"):
        await guarded(failure())


async def test_guarded_stops_waiting_for_a_stuck_inner_after_the_grace() -> None:
    release = asyncio.Event()

    async def stuck() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores every cancel until released

    task = asyncio.ensure_future(guarded(stuck(), grace=0.05))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    release.set()


async def test_deadline_times_out_and_lets_a_cancel_through() -> None:
    with pytest.raises(asyncio.TimeoutError):
        async with deadline(0.01):
            await asyncio.sleep(5)

    async def bounded() -> None:
        async with deadline(5):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(bounded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
