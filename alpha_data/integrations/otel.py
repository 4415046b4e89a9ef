"""OpenTelemetry tracing of a Database (optional extra ``otel``).

::

    from alpha_data.integrations.otel import instrument

    tracing = instrument(db)                  # global TracerProvider, or pass one
    ...
    tracing.uninstrument()

Spans (all children of whatever span is current, e.g. the web request):

* ``alpha_data.uow``: one per unit of work, from ``async with`` to its end
  (after the session was closed). Attributes ``alpha_data.uow.read_only``,
  ``.attempt`` (run number inside ``db.run``; > 1 is a retry),
  ``.outcome`` (committed / rolled_back / read_only / failed),
  ``.statements``, and ``error.type`` with an ERROR status on failure.
* statement spans (opentelemetry-instrumentation-sqlalchemy on
  ``db.engine.sync_engine``): one CLIENT span per statement, named after the
  SQL verb and database, with the SQL text (never the parameter values);
  children of the unit of work that sent them.
* ``alpha_data.cache.get``: one per cached read's round trip, with
  ``alpha_data.repository.method`` (``<entity>.<method>``, e.g.
  ``users.get_by_username``) and ``alpha_data.cache.result`` (hit / miss /
  unavailable) plus ``alpha_data.cache.hit``.
* ``alpha_data.cache.invalidate``: the invalidation sent after a COMMIT
  (inside the unit-of-work span, after its statements), with
  ``alpha_data.cache.tags`` and ``alpha_data.cache.delivered``.
* ``alpha_data.events.publish``: one per published event, with
  ``alpha_data.event.type`` and ``alpha_data.event.published``.

The OpenTelemetry packages are imported when :func:`instrument` runs; the
rest of alpha_data never needs them. Tracing off costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alpha_data.database import Database

__all__ = ["TRACER_NAME", "Instrumentation", "instrument"]

log = logging.getLogger("alpha_data.integrations.otel")

#: Instrumentation scope of alpha_data's own spans.
TRACER_NAME = "alpha_data"

_MISSING = (
    "alpha_data.integrations.otel needs opentelemetry-sdk and "
    "opentelemetry-instrumentation-sqlalchemy: pip install 'alpha_data[otel]'"
)


def _otel() -> tuple[Any, Any, Any, Any]:
    try:
        from opentelemetry import (  # type: ignore[import-not-found,unused-ignore]
            context,
            trace,
        )
        from opentelemetry.trace import (  # type: ignore[import-not-found,unused-ignore]
            SpanKind,
            Status,
        )
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    return context, trace, SpanKind, Status


class _UowSpans:
    """The ``Counters.tracer`` hook: a span per unit of work, current while it runs."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer
        self._context, self._trace, _, self._status = _otel()

    def start(self, uow: Any) -> Any:
        span = self._tracer.start_span(
            "alpha_data.uow",
            attributes={
                "alpha_data.uow.read_only": bool(uow.read_only),
                "alpha_data.uow.attempt": int(uow.attempt),
            },
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        return span, token

    def finish(
        self, handle: Any, uow: Any, outcome: str, error: str | None, duration_s: float
    ) -> None:
        span, token = handle
        try:
            self._context.detach(token)
        finally:
            if span.is_recording():
                span.set_attribute("alpha_data.uow.outcome", outcome)
                span.set_attribute("alpha_data.uow.statements", int(uow.statements))
                if error is not None:
                    span.set_attribute("error.type", error)
                    span.set_status(self._status(self._trace.StatusCode.ERROR, error))
            span.end()


def _method_of(key: str, prefix: str) -> str:
    """``<entity>.<method>`` from a cache key ``<prefix>:<entity>:<method>:<args>``."""
    rest = key[len(prefix) + 1 :] if key.startswith(prefix + ":") else key
    parts = rest.split(":", 2)
    return ".".join(parts[:2])


class Instrumentation:
    """What :func:`instrument` installed on one Database; ``uninstrument()`` removes it."""

    def __init__(
        self,
        db: Database,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        statements: bool = True,
        cache: bool = True,
        events: bool = True,
    ) -> None:
        _, trace, span_kind, _ = _otel()
        from alpha_data import __version__

        self.db = db
        self.tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=tracer_provider)
        self._trace = trace
        self._kind = span_kind
        self._patched: list[tuple[Any, str]] = []
        self._engine_tracer: Any = None
        self._uow_spans: _UowSpans | None = None
        if db.counters.tracer is not None:
            raise RuntimeError("this Database is already traced; uninstrument() it first")
        try:
            if statements:
                self._trace_statements(tracer_provider, meter_provider)
            if cache:
                self._trace_cache()
            if events:
                self._trace_events()
            self._uow_spans = _UowSpans(self.tracer)
            db.counters.tracer = self._uow_spans
        except BaseException:
            self.uninstrument()  # all or nothing
            raise

    # -- statements ------------------------------------------------------------

    def _trace_statements(self, tracer_provider: Any, meter_provider: Any) -> None:
        try:
            from opentelemetry.instrumentation.sqlalchemy.engine import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
                EngineTracer,
            )
            from opentelemetry.instrumentation.sqlalchemy.version import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
                __version__ as sa_version,
            )
            from opentelemetry.metrics import (  # type: ignore[import-not-found,unused-ignore]
                get_meter,
            )
        except ImportError as exc:
            raise ImportError(_MISSING) from exc
        name = "opentelemetry.instrumentation.sqlalchemy"
        tracer = self._trace.get_tracer(name, sa_version, tracer_provider=tracer_provider)
        meter = get_meter(name, sa_version, meter_provider=meter_provider)
        usage = meter.create_up_down_counter(
            name="db.client.connections.usage",
            unit="connections",
            description="The number of connections that are currently in the state "
            "described by the state attribute.",
        )
        # EngineTracer is what SQLAlchemyInstrumentor().instrument(engine=...) returns,
        # without the instrumentor's global patching of create_engine.
        engine_tracer: Any = EngineTracer
        self._engine_tracer = engine_tracer(tracer, self.db.engine.sync_engine, usage)

    def _untrace_statements(self) -> None:
        if self._engine_tracer is None:
            return
        from sqlalchemy import event

        engine = self.db.engine.sync_engine
        registered = type(self._engine_tracer)._remove_event_listener_params
        for entry in list(registered):
            target_ref, identifier, fn = entry
            if target_ref() is engine:
                if event.contains(engine, identifier, fn):
                    event.remove(engine, identifier, fn)
                registered.remove(entry)
        self._engine_tracer = None

    # -- cache and events --------------------------------------------------------

    def _patch(self, obj: Any, name: str, replacement: Any) -> None:
        setattr(obj, name, replacement)
        self._patched.append((obj, name))

    def _trace_cache(self) -> None:
        cache = self.db.cache
        tracer = self.tracer
        kind = self._kind.INTERNAL
        fetch, invalidate = cache.fetch, cache.invalidate

        async def traced_fetch(key: str, *args: Any, **kwargs: Any) -> Any:
            method = _method_of(key, cache.prefix)
            with tracer.start_as_current_span(
                "alpha_data.cache.get",
                kind=kind,
                attributes={"alpha_data.repository.method": method},
            ) as span:
                got = await fetch(key, *args, **kwargs)
                if got is None:
                    result = "unavailable"
                else:
                    result = "hit" if isinstance(got, bytes) else "miss"
                span.set_attribute("alpha_data.cache.result", result)
                span.set_attribute("alpha_data.cache.hit", result == "hit")
                return got

        async def traced_invalidate(tags: Iterable[str], *args: Any, **kwargs: Any) -> Any:
            tags = list(tags)
            with tracer.start_as_current_span(
                "alpha_data.cache.invalidate",
                kind=kind,
                attributes={"alpha_data.cache.tags": len(tags)},
            ) as span:
                delivered = await invalidate(tags, *args, **kwargs)
                span.set_attribute("alpha_data.cache.delivered", bool(delivered))
                return delivered

        self._patch(cache, "fetch", traced_fetch)
        self._patch(cache, "invalidate", traced_invalidate)

    def _trace_events(self) -> None:
        """A PRODUCER span per event published or delivered through ``db.events``."""
        self._trace_publish()
        self._trace_publish_many()
        self._trace_deliver()

    def _event_spans(self, events: Any) -> list[Any]:
        """One started (not current) publish span per event."""
        return [
            self.tracer.start_span(
                "alpha_data.events.publish",
                kind=self._kind.PRODUCER,
                attributes={"alpha_data.event.type": type(event).__name__},
            )
            for event in events
        ]

    def _trace_publish(self) -> None:
        bus = self.db.events
        tracer = self.tracer
        kind = self._kind.PRODUCER
        publish = bus.publish

        async def traced_publish(event: Any, *args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(
                "alpha_data.events.publish",
                kind=kind,
                attributes={"alpha_data.event.type": type(event).__name__},
            ) as span:
                published = await publish(event, *args, **kwargs)
                span.set_attribute("alpha_data.event.published", bool(published))
                return published

        self._patch(bus, "publish", traced_publish)

    def _trace_publish_many(self) -> None:
        bus = self.db.events
        publish_many = bus.publish_many

        async def traced_publish_many(events: Any, *args: Any, **kwargs: Any) -> Any:
            # One span per event (as for single publishes), sent in one round trip.
            spans = self._event_spans(events)
            try:
                published = await publish_many(events, *args, **kwargs)
                for span in spans:
                    span.set_attribute("alpha_data.event.published", bool(published))
                return published
            finally:
                for span in spans:
                    span.end()

        self._patch(bus, "publish_many", traced_publish_many)

    def _trace_deliver(self) -> None:
        bus = self.db.events
        deliver = bus.deliver

        async def traced_deliver(events: Any, *args: Any, **kwargs: Any) -> None:
            # The outbox's path (streams + pub/sub): one span per event, raises on failure.
            spans = self._event_spans(events)
            delivered = False
            try:
                await deliver(events, *args, **kwargs)
                delivered = True
            finally:
                for span in spans:
                    span.set_attribute("alpha_data.event.published", delivered)
                    span.end()

        self._patch(bus, "deliver", traced_deliver)

    # -- removal -------------------------------------------------------------------

    def uninstrument(self) -> None:
        """Remove every span source this instrumentation added (idempotent)."""
        for obj, name in reversed(self._patched):
            vars(obj).pop(name, None)
        self._patched.clear()
        if self._uow_spans is not None and self.db.counters.tracer is self._uow_spans:
            self.db.counters.tracer = None
        self._uow_spans = None
        self._untrace_statements()


def instrument(
    db: Database,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    statements: bool = True,
    cache: bool = True,
    events: bool = True,
) -> Instrumentation:
    """Trace ``db``: unit-of-work spans, statement spans, cache and event spans.

    ``tracer_provider``/``meter_provider`` default to the global ones.
    ``statements``/``cache``/``events`` switch the span sources off one by one.
    """
    return Instrumentation(
        db,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        statements=statements,
        cache=cache,
        events=events,
    )
