"""The monitor's background task on a real event loop (fake servers, the real clock)."""

from __future__ import annotations

import asyncio
import time

from alpha_data.routing import Router
from tests.unit.fakes import FakeClock, FakeReplica, FakeServers, engine


class RealClock(FakeClock):
    """time.monotonic, in the shape FakeServers expects."""

    def __call__(self) -> float:
        return time.monotonic()


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_the_task_starts_with_the_first_read_follows_commits_and_stops() -> None:
    clock = RealClock()
    servers = FakeServers(clock)
    replica_engine = engine(15440)
    standby = FakeReplica(replayed=servers.flushed)
    servers.replicas = {replica_engine: standby}
    router = Router(
        engine(15439), [("r", replica_engine)], check_interval=0.05, probes=servers, clock=clock
    )
    assert router.choose() is None  # starts the task; the start fence is pending
    await wait_for(lambda: router.choose() is not None)
    standby.paused = True
    servers.commit()
    router.committed()
    assert router.choose() is None
    await wait_for(lambda: not router.fence.pending)
    assert router.choose() is None  # behind the fence
    servers.resume(standby)
    await wait_for(lambda: router.choose() is not None)
    task = router.monitor._task
    assert task is not None and not task.done()
    await router.close()
    assert task.done()
