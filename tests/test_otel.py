"""OpenTelemetry spans: unit of work → statements, cache calls, invalidation after commit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.instrumentation.sqlalchemy")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from alpha_data import Database
from alpha_data.errors import NotFoundError
from alpha_data.integrations.otel import instrument
from alpha_data.services import create_portfolio, get_cached_portfolio, record_trade


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(real_db: Database, exporter: InMemorySpanExporter) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = instrument(real_db, tracer_provider=provider)
    try:
        yield real_db
    finally:
        tracing.uninstrument()


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _statements(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.CLIENT]


async def test_record_trade_span_tree(traced: Database, exporter: InMemorySpanExporter) -> None:
    portfolio = await create_portfolio(traced, name="traced")
    assert await get_cached_portfolio(traced, portfolio.id) is not None  # cached now
    exporter.clear()

    await record_trade(
        traced,
        portfolio_id=portfolio.id,
        symbol="AAPL",
        side="buy",
        quantity=Decimal("2"),
        price=Decimal("190.5"),
    )
    spans = list(exporter.get_finished_spans())
    uows = [s for s in spans if s.name == "alpha_data.uow"]
    assert len(uows) == 1
    uow = uows[0]
    assert uow.parent is None
    attrs = dict(uow.attributes or {})
    assert attrs["alpha_data.uow.outcome"] == "committed"
    assert attrs["alpha_data.uow.attempt"] == 1
    assert attrs["alpha_data.uow.read_only"] is False

    children = _children(spans, uow)
    statements = _statements(children)
    # SELECT … FOR UPDATE of the position, INSERT trade, INSERT position
    assert len(statements) >= 3
    assert attrs["alpha_data.uow.statements"] == len(statements)
    assert all(s.attributes and "db.statement" in s.attributes for s in statements)
    assert not _statements([s for s in spans if s not in children])  # none outside the UoW
    sql = " ".join(str((s.attributes or {})["db.statement"]) for s in statements)
    assert "INSERT INTO trades" in sql and "190.5" not in sql  # text, never parameters

    invalidations = [s for s in children if s.name == "alpha_data.cache.invalidate"]
    assert len(invalidations) == 1
    invalidation = invalidations[0]
    assert invalidation.start_time is not None
    assert all(
        s.end_time is not None and s.end_time <= invalidation.start_time for s in statements
    ), "the invalidation is sent after the transaction's statements (after COMMIT)"
    assert dict(invalidation.attributes or {})["alpha_data.cache.delivered"] is True
    assert dict(invalidation.attributes or {})["alpha_data.cache.tags"] >= 1

    published = [s for s in children if s.name == "alpha_data.events.publish"]
    assert {dict(s.attributes or {})["alpha_data.event.type"] for s in published} == {
        "TradeExecuted",
        "PositionChanged",
    }
    assert all(p.start_time >= invalidation.end_time for p in published)  # type: ignore[operator]


async def test_cache_spans_carry_method_and_hit_or_miss(
    traced: Database, exporter: InMemorySpanExporter
) -> None:
    portfolio = await create_portfolio(traced, name="cached")
    exporter.clear()
    await get_cached_portfolio(traced, portfolio.id)
    await traced.cache.drain()  # the background store of the miss
    await get_cached_portfolio(traced, portfolio.id)
    gets = [s for s in exporter.get_finished_spans() if s.name == "alpha_data.cache.get"]
    assert [dict(s.attributes or {})["alpha_data.cache.result"] for s in gets] == ["miss", "hit"]
    assert [dict(s.attributes or {})["alpha_data.cache.hit"] for s in gets] == [False, True]
    methods = {dict(s.attributes or {})["alpha_data.repository.method"] for s in gets}
    assert methods == {"portfolios.get_with_positions"}
    for get in gets:  # each inside its unit of work
        assert get.parent is not None
    uows = [s for s in exporter.get_finished_spans() if s.name == "alpha_data.uow"]
    assert [dict(u.attributes or {})["alpha_data.uow.outcome"] for u in uows] == [
        "read_only",
        "read_only",
    ]
    # the hit sent no statement
    assert dict(uows[1].attributes or {})["alpha_data.uow.statements"] == 0


async def test_failed_unit_of_work_span_has_error_status(
    traced: Database, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(NotFoundError):
        async with traced.unit_of_work() as uow:
            await uow.portfolios.get_one(987_654_321)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "alpha_data.uow"]
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "NotFoundError"
    assert dict(span.attributes or {})["alpha_data.uow.outcome"] == "failed"


async def test_retries_are_attempts_on_the_uow_spans(
    traced: Database, exporter: InMemorySpanExporter
) -> None:
    from alpha_data.errors import TransientError

    calls = 0

    async def flaky(uow: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransientError("serialization failure", sqlstate="40001")
        return calls

    assert await traced.run(flaky) == 2
    uows = [s for s in exporter.get_finished_spans() if s.name == "alpha_data.uow"]
    assert [dict(s.attributes or {})["alpha_data.uow.attempt"] for s in uows] == [1, 2]
    assert [dict(s.attributes or {})["alpha_data.uow.outcome"] for s in uows] == [
        "failed",
        "committed",
    ]


async def test_uninstrument_stops_every_span(
    real_db: Database, exporter: InMemorySpanExporter
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = instrument(real_db, tracer_provider=provider)
    with pytest.raises(RuntimeError, match="already traced"):
        instrument(real_db, tracer_provider=provider)
    tracing.uninstrument()
    tracing.uninstrument()  # idempotent
    portfolio = await create_portfolio(real_db, name="untraced")
    await get_cached_portfolio(real_db, portfolio.id)
    assert exporter.get_finished_spans() == ()
    assert real_db.counters.tracer is None
    assert "fetch" not in vars(real_db.cache)
