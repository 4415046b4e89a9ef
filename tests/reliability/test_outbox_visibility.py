"""The outbox is visible and prompt (issue 16): backlog, age, health, Prometheus; NOTIFY.

A writer whose Redis refuses connections leaves its commits to the relays;
with no relay running the backlog grows old, ``db.health()`` degrades past
``outbox_max_age`` and the Prometheus collector shows it. Once a relay of the
prefix delivers, health is ok again and the backlog is 0.
"""

from __future__ import annotations

import asyncio

import pytest

from alpha_data import Database, Settings
from alpha_data.services import record_trade
from tests.reliability.outbox_tools import (
    eventually,
    portfolio_ids,
    refused_redis_url,
    with_settings,
)

pytestmark = pytest.mark.usefixtures("truncate_after")


async def test_backlog_age_and_health_show_undelivered_effects(settings: Settings) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from alpha_data.integrations.prometheus import register

    writer = Database(
        with_settings(settings, redis_url=await refused_redis_url(settings), outbox_max_age=0.3)
    )
    relay = Database(with_settings(settings, outbox_relay=False))
    await writer.connect()  # its own relay runs too, but cannot reach Redis either
    try:
        (pid,) = await portfolio_ids(writer, 1)  # a commit with effects too
        left = writer.stats().outbox.deferred
        await record_trade(
            writer, portfolio_id=pid, symbol="AAPL", side="buy", quantity="1", price="2"
        )
        assert writer.stats().outbox.deferred == left + 1
        await asyncio.sleep(0.4)
        health = await writer.health()
        assert health.status == "degraded" and health.outbox is not None
        assert not health.outbox.ok and health.outbox.detail["backlog"] == left + 1
        figures = writer.stats().outbox
        assert figures.backlog == left + 1 and figures.oldest_age > 0.3
        registry = prometheus_client.CollectorRegistry()
        register(writer, registry)
        assert registry.get_sample_value("alpha_data_outbox_backlog") == left + 1
        assert registry.get_sample_value("alpha_data_outbox_oldest_age_seconds") > 0.3

        await relay.connect()
        relay.start_relay()

        async def delivered() -> bool:
            return (await writer.health()).outbox.ok  # type: ignore[union-attr]

        await eventually(delivered, within=5.0)
        assert writer.stats().outbox.backlog == 0

        async def counted() -> bool:  # counted once the relay task saw its COMMIT return
            return relay.stats().outbox.redelivered >= 1

        await eventually(counted, within=2.0)
    finally:
        await writer.close()
        await relay.close()


async def test_a_notify_wakes_a_relay_long_before_its_poll(settings: Settings) -> None:
    relay = Database(with_settings(settings, outbox_poll_interval=30.0))
    writer = Database(
        with_settings(settings, redis_url=await refused_redis_url(settings), outbox_relay=False)
    )
    await relay.connect()  # its relay now sleeps up to 30 s unless NOTIFY wakes it
    await writer.connect()
    try:
        (pid,) = await portfolio_ids(writer, 1)
        await asyncio.sleep(0.3)  # the relay has gone to sleep on an empty backlog
        await record_trade(
            writer, portfolio_id=pid, symbol="AAPL", side="buy", quantity="1", price="2"
        )  # the fast path fails: the writer marks its rows due and NOTIFYs

        async def delivered() -> bool:
            return relay.stats().outbox.redelivered >= 2  # the portfolio and the trade

        await eventually(delivered, within=10.0)
    finally:
        await writer.close()
        await relay.close()
