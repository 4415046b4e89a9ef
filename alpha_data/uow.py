"""UnitOfWork: one AsyncSession, one transaction, its repositories and after-commit hooks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session

from alpha_data.cache import invalidation
from alpha_data.cache.invalidation import CacheScope
from alpha_data.errors import (
    RETRYABLE_SQLSTATES,
    DataLayerError,
    ReadOnlyError,
    TransientError,
    UnitOfWorkStateError,
    is_database_error,
    translate,
    translating,
)
from alpha_data.observability.sqlhooks import CURRENT_UOW
from alpha_data.observability.stats import COMMITTED, FAILED, READ_ONLY, ROLLED_BACK
from alpha_data.repositories import (
    AlertRepository,
    ApiKeyRepository,
    MetricsRepository,
    PortfolioRepository,
    Repository,
    SessionBound,
    SessionHandle,
    UserRepository,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from alpha_data.cache import Cache
    from alpha_data.events import Event, EventBus
    from alpha_data.observability.stats import Counters
    from alpha_data.outbox import Outbox, Recorded

__all__ = ["AfterCommit", "DataSession", "IsolationLevel", "ReadOnlySession", "UnitOfWork"]

log = logging.getLogger("alpha_data.uow")

IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
AfterCommit = Callable[[], Awaitable[Any]]

_NEW, _ACTIVE, _ENDED = "new", "active", "ended"

_NOT_ACTIVE = "unit of work is not active: use it inside 'async with db.unit_of_work()'"

R = TypeVar("R", bound="Repository[Any]")
B = TypeVar("B", bound=SessionBound)


class DataSession(Session):
    """The Session class of alpha_data's units of work (and ``db.session()``).

    alpha_data's session listeners (cache invalidation, read-only, routing)
    are bound to this class and its subclasses only, so Sessions a host
    application creates in the same process never run them.
    """


invalidation.listen(DataSession)


class ReadOnlySession(DataSession):
    """A Session that refuses to flush changes or run INSERT/UPDATE/DELETE."""


@event.listens_for(ReadOnlySession, "before_flush")
def _refuse_flush(session: Session, flush_context: Any, instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlyError("this unit of work is read-only; open one without read_only=True")


@event.listens_for(ReadOnlySession, "do_orm_execute")
def _refuse_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlyError("this unit of work is read-only; open one without read_only=True")


class UnitOfWork:
    """One transaction over one session; leave the block without ``commit()`` to roll back.

    Repositories (``users``, ``api_keys``, ``portfolios``, ``alerts``,
    ``metrics``) are bound to ``session``. Callbacks given to ``on_commit``
    run after a successful commit, in order, outside the transaction.

    With a cache, the UoW records what its flushes and statements change and
    invalidates it right after COMMIT, before the callbacks; a rollback
    invalidates nothing. ``cache_reads=False`` (REPEATABLE READ and
    SERIALIZABLE units of work) sends cached reads straight to PostgreSQL.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        read_only: bool = False,
        cache: Cache | None = None,
        events: EventBus | None = None,
        cache_reads: bool = True,
        counters: Counters | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._factory = session_factory
        self.read_only = read_only
        self.cache = cache
        self.events = events
        self._cache_reads = cache_reads
        self._scope: CacheScope | None = None
        self._state = _NEW
        self._session: AsyncSession | None = None
        self._after_commit: list[AfterCommit] = []
        self._outbox = outbox
        self._events: list[Event] = []
        self._handle: SessionHandle | None = None
        self._repos: dict[type[SessionBound], SessionBound] = {}
        # Observability (docs/operations.md): counted into ``counters``.
        self._counters = counters
        #: Statements sent while this unit of work was the current one.
        self.statements = 0
        #: Which run of ``db.run`` this is (1 = first; > 1 = a retry).
        self.attempt = 1
        self._commits = 0
        self._started = 0.0
        self._observing: tuple[Any, Any] | None = None  # (context token, tracer handle)

    # -- state ---------------------------------------------------------------

    @property
    def session(self) -> AsyncSession:
        """The UoW's AsyncSession (only inside the ``async with`` block)."""
        if self._state != _ACTIVE or self._session is None:
            raise UnitOfWorkStateError(_NOT_ACTIVE)
        return self._session

    @property
    def active(self) -> bool:
        """True inside the block."""
        return self._state == _ACTIVE

    # -- repositories --------------------------------------------------------

    def repository(self, cls: type[R]) -> R:
        """The unit of work's instance of repository class ``cls`` (built on first use).

        Any subclass of ``alpha_data.repositories.Repository`` (the library's or
        an application's) works: it is built as ``cls(handle, cache=...,
        read_only=...)`` once per unit of work and reaches the session through
        a handle closed when the block ends, after which each of its methods
        raises UnitOfWorkStateError.
        """
        return self._bound(cls)

    def _bound(self, cls: type[B]) -> B:
        repo = self._repos.get(cls)
        if repo is None:
            if not isinstance(cls, type) or not issubclass(cls, SessionBound):
                raise TypeError(f"{cls!r} is not a repository class (subclass Repository)")
            handle = self._handle
            if self._state != _ACTIVE or handle is None:
                raise UnitOfWorkStateError(_NOT_ACTIVE)
            repo = self._repos[cls] = cls(handle, cache=self.cache, read_only=self.read_only)
        return cast(B, repo)

    @property
    def users(self) -> UserRepository:
        """Users of the fund."""
        return self._bound(UserRepository)

    @property
    def api_keys(self) -> ApiKeyRepository:
        """API keys (hash + public prefix)."""
        return self._bound(ApiKeyRepository)

    @property
    def portfolios(self) -> PortfolioRepository:
        """Portfolios with their positions and trades (aggregate root)."""
        return self._bound(PortfolioRepository)

    @property
    def alerts(self) -> AlertRepository:
        """Alerts."""
        return self._bound(AlertRepository)

    @property
    def metrics(self) -> MetricsRepository:
        """Time-series metric points (rows, not ORM objects)."""
        return self._bound(MetricsRepository)

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != _NEW:
            raise UnitOfWorkStateError("a unit of work can be entered only once; open a new one")
        self._session = self._factory()
        self._handle = SessionHandle(self._session)
        if self.cache is not None:
            self._scope = CacheScope(self.cache, reads=self._cache_reads)
            self._scope.bind(self._session)
        self._state = _ACTIVE
        counters = self._counters
        if counters is not None and counters.active:
            self._started = perf_counter()
            tracer = counters.tracer
            self._observing = (
                CURRENT_UOW.set(self),
                tracer.start(self) if tracer is not None else None,
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self._session
        self._state = _ENDED
        self._after_commit.clear()
        self._events.clear()
        if self._handle is not None:
            self._handle.close()  # repositories kept past the block now refuse every use
        self._repos.clear()
        if self._scope is not None:
            self._scope.discard()
        if session is not None:
            try:
                # close() releases the connection (rolling back anything not
                # committed) and detaches objects without expiring them. A
                # session that never began (a pure cache hit) holds no
                # connection: closing it is plain Python, no greenlet needed.
                sync = session.sync_session
                if sync.in_transaction():
                    await session.close()
                else:
                    sync.close()
            except Exception:  # a dead connection cannot roll back; the server does
                log.debug("session close failed after unit of work", exc_info=True)
        error: BaseException | None = None
        if exc is not None and not isinstance(exc, DataLayerError) and is_database_error(exc):
            error = translate(exc)
        if self._observing is not None:
            self._observe(error or exc)
        if error is not None:
            raise error from exc

    def _observe(self, error: BaseException | None) -> None:
        """Count the outcome, log the DEBUG line, end the span (never raises)."""
        assert self._observing is not None
        token, handle = self._observing
        self._observing = None
        try:
            CURRENT_UOW.reset(token)
        except ValueError:  # exited in another context than it was entered in
            CURRENT_UOW.set(None)
        elapsed = perf_counter() - self._started
        if error is not None:
            outcome, error_name = FAILED, type(error).__name__
        elif self._commits:
            outcome, error_name = COMMITTED, None
        else:
            outcome, error_name = (READ_ONLY if self.read_only else ROLLED_BACK), None
        counters = self._counters
        if counters is None:
            return
        if counters.enabled:
            counters.record_uow(outcome, error_name)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "unit of work %s in %.2f ms (%d statements, attempt %d)%s",
                outcome,
                elapsed * 1000,
                self.statements,
                self.attempt,
                f": {error_name}" if error_name else "",
                extra={
                    "outcome": outcome,
                    "duration_ms": round(elapsed * 1000, 3),
                    "statements": self.statements,
                    "attempt": self.attempt,
                    "retries": self.attempt - 1,
                    "error": error_name,
                    "read_only": self.read_only,
                },
            )
        tracer = counters.tracer if handle is not None else None
        if tracer is not None:
            try:
                tracer.finish(handle, self, outcome, error_name, elapsed)
            except Exception:
                log.debug("tracing the unit of work failed", exc_info=True)

    def on_commit(self, callback: AfterCommit) -> None:
        """Run ``await callback()`` after the next successful commit (never on rollback)."""
        self.session  # noqa: B018 - raises when not active
        self._after_commit.append(callback)

    def publish_after_commit(self, event: Event) -> None:
        """Deliver ``event`` after the next successful commit (not on rollback).

        It is written to the outbox in the same transaction, so it is
        delivered even if this process cannot (see alpha_data.outbox).
        """
        self.session  # noqa: B018 - raises when not active
        if self.events is None:
            raise UnitOfWorkStateError("this unit of work has no event bus")
        self._events.append(event)

    async def flush(self) -> None:
        """Send pending changes to PostgreSQL now (errors arrive typed)."""
        with translating(only_database_errors=True):
            await self.session.flush()

    async def commit(self) -> None:
        """Flush and COMMIT; then run the after-commit callbacks.

        A connection lost while COMMIT was in flight raises TransientError with
        ``outcome_unknown=True``: the transaction may have committed.
        """
        session = self.session
        await self.flush()
        recorded = await self._record()  # the last statement before COMMIT
        try:
            await session.commit()
        except Exception as exc:
            error = translate(exc)
            if isinstance(error, TransientError) and error.sqlstate not in RETRYABLE_SQLSTATES:
                await self._invalidate()  # it may have committed: invalidating is the safe side
                raise TransientError(
                    "connection lost while COMMIT was in flight: the outcome is unknown",
                    outcome_unknown=True,
                    sqlstate=error.sqlstate,
                ) from exc
            raise error from exc
        self._commits += 1
        await self._deliver(recorded)
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                await callback()
            except Exception:
                log.exception("after-commit callback failed; the commit stands")

    async def _record(self) -> Recorded | None:
        """Write the commit's effects to the outbox, in its transaction (none: no statement)."""
        outbox = self._outbox
        if outbox is None:
            return None
        tags = self._scope.tags if self._scope is not None else set()
        try:
            return await outbox.record(self.session, outbox.effects(tags, self._events))
        except DataLayerError:
            raise
        except Exception as exc:
            if is_database_error(exc):
                raise translate(exc) from exc
            raise

    async def _deliver(self, recorded: Recorded | None) -> None:
        """After COMMIT: deliver the effects at once (the relays redo what fails)."""
        events, self._events = self._events, []
        if self._scope is not None:
            self._scope.tags = set()
        if recorded is not None and self._outbox is not None:
            await self._outbox.deliver(recorded)
        elif self._outbox is None:  # no outbox (a bare UnitOfWork): best effort, from memory
            await self._invalidate()
            if events and self.events is not None:
                try:
                    await self.events.deliver(events)
                except Exception:
                    log.warning("events of a commit without an outbox were not delivered")

    async def _invalidate(self) -> None:
        """Deliver the cache invalidations of what was written (a failure is only logged)."""
        if self._scope is None:
            return
        try:
            await self._scope.deliver()
        except Exception:
            log.exception("cache invalidation failed; the commit stands")

    async def rollback(self) -> None:
        """Roll back now; the UoW stays usable and after-commit callbacks are dropped."""
        self._after_commit.clear()
        self._events.clear()
        if self._scope is not None:
            self._scope.discard()
        await self.session.rollback()
