"""Engine and pool hooks: statement counts, the slow-query log, pool waits and timeouts.

* ``before_cursor_execute``/``after_cursor_execute`` count every statement
  (globally and for the unit of work running it, found through a context
  variable) and log those slower than ``slow_query_ms`` on ``alpha_data.sql``
  at WARNING with the SQL text and duration, never the parameter values.
  ``handle_error`` does the same for a slow statement that failed (a
  ``statement_timeout`` cancel is the slowest statement there is).
* :class:`ObservedPool` is the engine's pool class: a checkout that finds no
  free connection and no overflow left counts as a wait (with its duration);
  one that gives up after ``pool_timeout`` counts as a timeout and is logged
  on ``alpha_data.pool`` (at most once per 30 s).

Cost: two listener calls (~1 µs) per statement, nothing per checkout that
does not wait.
"""

from __future__ import annotations

import logging
import weakref
from contextvars import ContextVar
from time import perf_counter
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from alpha_data._sa_internals import pool_checkout_must_wait
from alpha_data.errors import sqlstate_of
from alpha_data.observability.logs import ENGINE_LOGGER, HIDE_RESULT_ROWS, Throttle
from alpha_data.observability.stats import Counters

__all__ = [
    "CURRENT_UOW",
    "MAX_SQL_CHARS",
    "ObservedPool",
    "StatementHooks",
    "StatementSink",
    "install",
    "installed_hooks",
    "share_events",
]

sql_log = logging.getLogger("alpha_data.sql")
pool_log = logging.getLogger("alpha_data.pool")

#: Longest SQL text put in a slow-statement record (the rest is cut).
MAX_SQL_CHARS = 2000
_POOL_WARN_INTERVAL = 30.0
_STARTED = "_alpha_data_started"


class StatementSink(Protocol):
    """What the statement hook counts into for the running unit of work."""

    statements: int


#: The unit of work running in this context (its statements are counted on it).
CURRENT_UOW: ContextVar[StatementSink | None] = ContextVar("alpha_data_uow", default=None)

_hooks: weakref.WeakKeyDictionary[Engine, StatementHooks] = weakref.WeakKeyDictionary()


class StatementHooks:
    """The statement listeners of one engine, counting into ``counters``."""

    def __init__(self, counters: Counters, slow_query_ms: float) -> None:
        self.counters = counters
        self.slow_query_ms = slow_query_ms
        self.installed = False

    @property
    def slow_query_ms(self) -> float:
        """Threshold of the slow-statement log (0 logs every statement)."""
        return self._slow_s * 1000

    @slow_query_ms.setter
    def slow_query_ms(self, value: float) -> None:
        self._slow_s = max(0.0, value) / 1000

    def before(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        """``before_cursor_execute``: count and stamp the start time."""
        self.counters.statements += 1
        uow = CURRENT_UOW.get()
        if uow is not None:
            uow.statements += 1
        if context is not None:
            setattr(context, _STARTED, perf_counter())

    def after(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        """``after_cursor_execute``: log the statement when it was slow."""
        started = getattr(context, _STARTED, None)
        if started is None:
            return
        elapsed = perf_counter() - started
        if elapsed >= self._slow_s:
            self._slow(statement, elapsed, executemany, None)

    def error(self, exception_context: Any) -> None:
        """``handle_error``: a statement that failed slowly is logged too."""
        context = exception_context.execution_context
        started = getattr(context, _STARTED, None)
        if started is None:
            return
        elapsed = perf_counter() - started
        if elapsed >= self._slow_s:
            original = exception_context.original_exception
            # the driver's own error (asyncpg's QueryCanceledError, ...) over the adapter's
            driver_error = original.__cause__ or original
            self._slow(
                str(exception_context.statement or ""),
                elapsed,
                bool(getattr(context, "executemany", False)),
                type(driver_error).__name__,
                sqlstate_of(original),
            )

    def _slow(
        self,
        statement: str,
        elapsed: float,
        executemany: bool,
        error: str | None,
        sqlstate: str | None = None,
    ) -> None:
        self.counters.slow_statements += 1
        if not sql_log.isEnabledFor(logging.WARNING):
            return
        sql = statement if len(statement) <= MAX_SQL_CHARS else statement[:MAX_SQL_CHARS] + "…"
        duration_ms = elapsed * 1000
        sql_log.warning(
            "slow statement (%.1f ms, threshold %.0f ms)%s: %s",
            duration_ms,
            self.slow_query_ms,
            f" failed with {error} (SQLSTATE {sqlstate})" if error else "",
            sql,
            extra={
                "sql": sql,
                "duration_ms": round(duration_ms, 3),
                "threshold_ms": self.slow_query_ms,
                "executemany": executemany,
                "error": error,
                "sqlstate": sqlstate,
            },
        )

    def install(self, engine: AsyncEngine | Engine) -> None:
        """Listen on ``engine`` (idempotent)."""
        sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        if self.installed:
            return
        event.listen(sync, "before_cursor_execute", self.before)
        event.listen(sync, "after_cursor_execute", self.after)
        event.listen(sync, "handle_error", self.error)
        self.installed = True
        _hooks[sync] = self

    def remove(self, engine: AsyncEngine | Engine) -> None:
        """Stop listening on ``engine`` (idempotent)."""
        sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        if not self.installed:
            return
        event.remove(sync, "before_cursor_execute", self.before)
        event.remove(sync, "after_cursor_execute", self.after)
        event.remove(sync, "handle_error", self.error)
        self.installed = False


def installed_hooks(engine: AsyncEngine | Engine) -> StatementHooks | None:
    """The hooks :func:`install` put on ``engine``, if any."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    return _hooks.get(sync)


class ObservedPool(AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool that counts checkouts which had to wait, and timeouts.

    ``counters`` is set by :func:`install` (None: count nothing); a pool
    recreated by ``engine.dispose()`` keeps it.
    """

    counters: Counters | None = None
    _throttle: Throttle | None = None
    # SQLAlchemy's own pool logging stays where it always was, not under alpha_data.*
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def _do_get(self) -> ConnectionPoolEntry:
        counters = self.counters
        if counters is None or not counters.enabled or not pool_checkout_must_wait(self):
            return super()._do_get()
        # No idle connection and no overflow left: this checkout waits.
        counters.pool_waits += 1
        started = perf_counter()
        try:
            return super()._do_get()
        except sa_exc.TimeoutError:
            counters.pool_timeouts += 1
            self._warn_timeout(perf_counter() - started)
            raise
        finally:
            counters.pool_wait_seconds += perf_counter() - started

    def _warn_timeout(self, waited: float) -> None:
        throttle = self._throttle
        if throttle is None:
            throttle = self._throttle = Throttle(_POOL_WARN_INTERVAL)
        if not throttle.allow():
            return
        pool_log.warning(
            "connection pool exhausted: no connection free within %.1f s "
            "(pool_size %d + max_overflow %d all checked out); %d more timeouts not logged",
            waited,
            self.size(),
            self._max_overflow,
            throttle.take_suppressed(),
            extra={
                "waited_s": round(waited, 3),
                "pool_size": self.size(),
                "max_overflow": self._max_overflow,
                "timeouts_total": self.counters.pool_timeouts if self.counters else 0,
            },
        )

    def recreate(self) -> ObservedPool:
        """The replacement pool of ``dispose()``, counting into the same counters."""
        new = super().recreate()
        assert isinstance(new, ObservedPool)
        new.counters = self.counters
        new._throttle = self._throttle
        return new


def share_events(engine: AsyncEngine, primary: AsyncEngine, counters: Counters) -> None:
    """Make ``engine`` (a second pool on the primary) run ``primary``'s engine events.

    ``engine`` takes ``primary``'s event dispatcher itself, so every statement
    listener on ``db.engine`` — the statement hooks above, OpenTelemetry, a
    test's counter, one added later — sees its statements too, exactly once;
    its pool counts waits and timeouts into ``counters``. (Listeners of the
    dialect or of the pool stay per engine.)
    """
    sync, main = engine.sync_engine, primary.sync_engine
    sync.dispatch = main.dispatch
    # Connections consult the engine's flag before dispatching; the shared
    # dispatcher may gain listeners at any time.
    sync._has_events = True
    pool = sync.pool
    if isinstance(pool, ObservedPool):
        pool.counters = counters


def install(engine: AsyncEngine, counters: Counters, slow_query_ms: float) -> StatementHooks:
    """Put the statement hooks on ``engine`` and point its pool at ``counters``.

    For an engine created with ``logging_name="alpha_data"``, SQLAlchemy's
    DEBUG logging of result rows is blanked (rows may hold password hashes).
    """
    hooks = StatementHooks(counters, slow_query_ms)
    hooks.install(engine)
    if engine.sync_engine.logging_name == ENGINE_LOGGER.rsplit(".", 1)[1]:
        logging.getLogger(ENGINE_LOGGER).addFilter(HIDE_RESULT_ROWS)
    pool = engine.sync_engine.pool
    if isinstance(pool, ObservedPool):
        pool.counters = counters
    return hooks
