"""The router's choice, fences and lag rule, driven with a fake clock and fake servers.

Tests are synchronous on purpose: ``Router.choose()`` outside an event loop
starts no monitor task, so each test runs the monitor's rounds itself
(``settle``), exactly when it wants them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest

from alpha_data.routing import Router
from tests.unit.fakes import INSERT_AHEAD, make_router


def settle(router: Router) -> None:
    """One monitor round (fence, primary sample, due probes)."""
    asyncio.run(router.monitor.round())


def due(router: Router) -> bool:
    """True when the monitor would run a round now (a replica is due or a fence pending)."""
    now = router.clock()
    return router.fence.pending or any(
        now >= (r.due_at if r.healthy else r.retry_at) or r.replay_lsn < router.fence.lsn
        for r in router.replicas
    )


def test_a_replica_serves_nothing_before_the_monitor_knows_it() -> None:
    router, _, _ = make_router()
    assert router.fence.pending
    assert router.choose() is None
    assert router.status()[0]["lag_s"] is None
    settle(router)
    assert router.choose() is router.replicas[0]
    assert router.status()[0]["lag_s"] == 0.0


def test_a_fresh_router_waits_until_a_lagging_replica_passed_the_start_fence() -> None:
    """Issue 21 item 1: replay paused, a commit elsewhere, a new process starts 5 s later."""
    router, servers, (standby,) = make_router()
    standby.paused = True
    servers.commit()  # another process's commit the replica never replayed
    servers.clock.advance(5.0)
    for _ in range(20):
        settle(router)
        assert router.choose() is None
        servers.clock.advance(0.5)
    # Honest lag: the age of the last commit the replica replayed (none: unknown).
    assert router.status()[0]["lag_s"] is None
    servers.resume(standby)
    settle(router)
    assert router.choose() is router.replicas[0]


def test_status_reports_the_lag_measured_from_the_last_replayed_commit() -> None:
    router, servers, (standby,) = make_router()
    servers.commit()  # replayed: the replica shows it
    servers.clock.advance(1.5)
    standby.paused = True
    servers.commit()  # not replayed
    servers.clock.advance(5.0)
    settle(router)  # a new process: its first sample is newer than what the replica has
    lag = router.status()[0]["lag_s"]
    assert lag == pytest.approx(6.5)
    assert router.choose() is None  # behind the start fence, whatever the lag


def test_read_your_writes_fence_moves_with_each_commit() -> None:
    router, servers, (standby,) = make_router()
    settle(router)
    assert router.choose() is not None
    standby.paused = True
    servers.commit()
    router.committed()
    assert router.choose() is None  # fence pending: primary
    settle(router)
    assert not router.fence.pending and router.fence.lsn == servers.flushed
    assert router.choose() is None  # replica behind the fence
    servers.resume(standby)
    settle(router)
    assert router.choose() is router.replicas[0]


def test_the_lsn_a_commit_delivery_reads_is_the_fence_of_the_commits_before_it() -> None:
    """Issue 21 item 4: the cache's invalidation LSN (insert position) comes with the
    flush position, which is the read-your-writes fence: a standby can reach it."""
    router, servers, (standby,) = make_router()
    settle(router)
    standby.paused = True
    servers.commit()
    router.committed()
    lsn = asyncio.run(router.commit_lsn())  # no monitor sample needed
    assert lsn == servers.flushed + INSERT_AHEAD
    assert not router.fence.pending and router.fence.lsn == servers.flushed
    assert router.choose() is None  # the replica is behind it
    servers.resume(standby)
    settle(router)
    route = router.route({})
    assert route.replica is router.replicas[0] and route.replay_lsn == servers.flushed
    assert router.primary_route({}).replay_lsn is None


def test_an_answer_to_a_probe_sent_before_a_failure_is_dropped() -> None:
    """It may describe the standby before it restarted: the replica stays down, position 0."""
    router, servers, _ = make_router()
    settle(router)
    replica = router.replicas[0]
    answer = servers.replica
    release = asyncio.Event()

    async def slow(engine: Any) -> Any:
        position = await answer(engine)  # read before the failure
        await release.wait()
        return position

    async def scenario() -> None:
        servers.replica = slow  # type: ignore[method-assign]
        probe = asyncio.ensure_future(router.monitor.probe(replica))
        await asyncio.sleep(0)
        servers.clock.advance(0.1)
        router.failed(replica, "connection lost")
        release.set()
        await probe

    asyncio.run(scenario())
    assert not replica.healthy and replica.replay_lsn == 0


def test_a_fence_refresh_position_moves_no_fence() -> None:
    """The cache's fence refresh reads the position too (``fences=False``): other
    processes' commits are no reason to keep this Database's reads off a lagging replica."""
    router, servers, (standby,) = make_router()
    settle(router)
    standby.paused = True
    servers.commit()  # another process
    assert asyncio.run(router.commit_lsn(False)) == servers.flushed + INSERT_AHEAD
    assert router.fence.lsn < servers.flushed and router.choose() is router.replicas[0]


def test_a_delivery_position_fences_a_commit_whose_outcome_was_unknown() -> None:
    """COMMIT lost its connection: no after_commit, no fence request; the invalidation that
    follows still reads the position, and reads stay off replicas that lack it."""
    router, servers, (standby,) = make_router()
    settle(router)
    standby.paused = True
    servers.commit()  # it did commit
    asyncio.run(router.commit_lsn())
    assert router.fence.lsn == servers.flushed and router.choose() is None


def test_without_read_your_writes_the_commit_lsn_moves_no_fence() -> None:
    router, servers, _ = make_router(read_your_writes=False)
    settle(router)
    servers.commit()
    assert asyncio.run(router.commit_lsn()) == servers.flushed + INSERT_AHEAD
    assert router.fence.lsn < servers.flushed and router.choose() is router.replicas[0]


def test_a_standby_that_restarted_behind_where_it_was_is_taken_at_its_word() -> None:
    """Its reads show less than before: the cache must not count on the old position."""
    router, servers, (standby,) = make_router()
    settle(router)
    servers.commit()
    servers.clock.advance(1.0)
    settle(router)
    before = router.replicas[0].replay_lsn
    assert before == servers.flushed
    standby.replayed = before - 100  # restarted from an earlier restart point
    servers.clock.advance(1.0)
    settle(router)
    assert router.replicas[0].replay_lsn == before - 100
    assert router.status()[0]["lag_s"] >= 1.0  # the commit it lost is a second old


def test_without_read_your_writes_only_the_start_fence_applies() -> None:
    router, servers, (standby,) = make_router(read_your_writes=False)
    settle(router)
    standby.paused = True
    servers.commit()
    router.committed()
    assert not router.fence.pending
    assert router.choose() is router.replicas[0]


def test_an_unreachable_primary_keeps_the_fence_pending() -> None:
    router, servers, _ = make_router()
    servers.primary_down = True
    settle(router)
    assert router.fence.pending and router.choose() is None
    servers.primary_down = False
    settle(router)
    assert router.choose() is router.replicas[0]


@pytest.mark.parametrize(
    ("max_lag", "interval"), [(1.5, 1.0), (10.0, 1.0), (0.3, 1.0), (2.0, 0.7), (1.0, 1.0)]
)
def test_no_read_starts_on_a_replica_older_than_max_lag(max_lag: float, interval: float) -> None:
    """Issue 21 item 2: the bound is replica_max_lag for any settings, probes or not."""
    router, servers, (standby,) = make_router(max_lag=max_lag, interval=interval)
    step = 0.01
    worst = 0.0
    served_while_paused = 0
    for i in range(2000):
        if i % 25 == 0:
            servers.commit()
        if i == 300:
            standby.paused = True  # replay stops; commits keep coming
        if i == 1200:
            servers.resume(standby)
        if due(router):
            settle(router)
        if router.choose() is not None:
            staleness = servers.staleness(standby, servers.clock())
            worst = max(worst, staleness)
            served_while_paused += standby.paused
        servers.clock.advance(step)
    assert worst <= max_lag
    # ... and the replica did serve until close to the bound (probes came in time).
    assert served_while_paused * step >= max_lag - 0.25 or max_lag > 5.0
    assert router.choose() is router.replicas[0]  # back after replay resumed


def test_a_replica_that_keeps_up_stays_usable_when_max_lag_is_below_the_interval() -> None:
    router, servers, _ = make_router(max_lag=0.3, interval=1.0)
    probes = 0
    for i in range(1000):
        if i % 10 == 0:
            servers.commit()
        if due(router):
            settle(router)
            probes += 1
        assert router.choose() is router.replicas[0]
        servers.clock.advance(0.01)
    assert 20 <= probes <= 200  # about every max_lag / 2, not every step


def test_round_robin_over_usable_replicas() -> None:
    router, _, fakes = make_router(3)
    settle(router)
    picks = [router.choose() for _ in range(6)]
    assert picks == router.replicas * 2
    fakes[1].down = True
    router.replicas[1].due_at = 0.0
    settle(router)
    assert {router.choose() for _ in range(4)} == {router.replicas[0], router.replicas[2]}
    assert [r.served for r in router.replicas] == [4, 2, 4]


def test_a_failed_probe_marks_the_replica_down_and_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="alpha_data.routing")
    router, servers, (standby,) = make_router()
    settle(router)
    standby.down = True
    router.replicas[0].due_at = 0.0
    settle(router)
    replica = router.replicas[0]
    assert not replica.healthy and replica.fresh_as_of is None
    assert router.choose() is None
    assert "unavailable" in caplog.text and "ConnectionRefusedError" in caplog.text
    standby.down = False
    settle(router)  # not due yet: back-off
    assert not replica.healthy
    servers.clock.advance(replica.retry_at - servers.clock())
    settle(router)
    assert replica.healthy and router.choose() is replica
    assert "answers again" in caplog.text


def test_back_off_doubles_up_to_the_cap() -> None:
    router, servers, (standby,) = make_router()
    standby.down = True
    delays = []
    for _ in range(10):
        servers.clock.advance(max(0.0, router.replicas[0].retry_at - servers.clock()))
        settle(router)
        delays.append(router.replicas[0].retry_at - servers.clock())
    assert delays[0] <= 0.25 and delays[3] > 0.25
    assert max(delays) <= 30.0


def test_a_promoted_replica_serves_no_reads(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="alpha_data.routing")
    router, _, (standby,) = make_router()
    standby.in_recovery = False
    settle(router)
    assert router.choose() is None
    assert "not in recovery" in caplog.text


def test_lagging_and_caught_up_are_announced_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="alpha_data.routing")
    router, servers, (standby,) = make_router(max_lag=1.0)
    settle(router)
    standby.paused = True
    servers.commit()
    for _ in range(30):
        servers.clock.advance(0.1)
        if due(router):
            settle(router)
    assert caplog.text.count("behind the primary") == 1
    servers.resume(standby)
    servers.clock.advance(1.0)
    settle(router)
    assert caplog.text.count("caught up") == 1
    assert router.choose() is router.replicas[0]


def test_samples_are_thinned_but_the_newest_is_kept() -> None:
    router, servers, _ = make_router()
    for _ in range(50):
        servers.commit()
        asyncio.run(router.monitor._sample())
        servers.clock.advance(0.01)
    samples = list(router.monitor._samples)
    assert samples[-1][1] == servers.flushed
    assert len(samples) <= 7
    assert all(b[1] >= a[1] for a, b in itertools.pairwise(samples))
