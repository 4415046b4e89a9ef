"""UnitOfWork: one AsyncSession, one transaction, its repositories and after-commit hooks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session

from alpha_data.errors import (
    DataLayerError,
    ReadOnlyError,
    TransientError,
    UnitOfWorkStateError,
    is_database_error,
    translate,
)
from alpha_data.repositories import (
    AlertRepository,
    ApiKeyRepository,
    MetricsRepository,
    PortfolioRepository,
    UserRepository,
)

if TYPE_CHECKING:
    from alpha_data.cache import Cache
    from alpha_data.events import EventBus

__all__ = ["AfterCommit", "IsolationLevel", "ReadOnlySession", "UnitOfWork"]

log = logging.getLogger("alpha_data.uow")

IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
AfterCommit = Callable[[], Awaitable[Any]]

_NEW, _ACTIVE, _ENDED = "new", "active", "ended"


class ReadOnlySession(Session):
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
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        read_only: bool = False,
        cache: Cache | None = None,
        events: EventBus | None = None,
    ) -> None:
        self._factory = session_factory
        self.read_only = read_only
        self.cache = cache
        self.events = events
        self._state = _NEW
        self._session: AsyncSession | None = None
        self._after_commit: list[AfterCommit] = []
        self._repos: dict[str, Any] = {}

    # -- state ---------------------------------------------------------------

    @property
    def session(self) -> AsyncSession:
        """The UoW's AsyncSession (only inside the ``async with`` block)."""
        if self._state != _ACTIVE or self._session is None:
            raise UnitOfWorkStateError(
                "unit of work is not active: use it inside 'async with db.unit_of_work()'"
            )
        return self._session

    @property
    def active(self) -> bool:
        """True inside the block."""
        return self._state == _ACTIVE

    def _repo(self, name: str, cls: Any) -> Any:
        session = self.session
        repo = self._repos.get(name)
        if repo is None:
            repo = cls(session, cache=self.cache, read_only=self.read_only)
            self._repos[name] = repo
        return repo

    @property
    def users(self) -> UserRepository:
        """Users of the fund."""
        repo: UserRepository = self._repo("users", UserRepository)
        return repo

    @property
    def api_keys(self) -> ApiKeyRepository:
        """API keys (hash + public prefix)."""
        repo: ApiKeyRepository = self._repo("api_keys", ApiKeyRepository)
        return repo

    @property
    def portfolios(self) -> PortfolioRepository:
        """Portfolios with their positions and trades (aggregate root)."""
        repo: PortfolioRepository = self._repo("portfolios", PortfolioRepository)
        return repo

    @property
    def alerts(self) -> AlertRepository:
        """Alerts."""
        repo: AlertRepository = self._repo("alerts", AlertRepository)
        return repo

    @property
    def metrics(self) -> MetricsRepository:
        """Time-series metric points (rows, not ORM objects)."""
        repo: MetricsRepository = self._repo("metrics", MetricsRepository)
        return repo

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> UnitOfWork:
        if self._state != _NEW:
            raise UnitOfWorkStateError("a unit of work can be entered only once; open a new one")
        self._session = self._factory()
        self._state = _ACTIVE
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
        self._repos.clear()
        if session is not None:
            try:
                # close() releases the connection (rolling back anything not
                # committed) and detaches objects without expiring them.
                await session.close()
            except Exception:  # a dead connection cannot roll back; the server does
                log.debug("session close failed after unit of work", exc_info=True)
        if exc is not None and not isinstance(exc, DataLayerError) and is_database_error(exc):
            raise translate(exc) from exc

    def on_commit(self, callback: AfterCommit) -> None:
        """Run ``await callback()`` after the next successful commit (never on rollback)."""
        self.session  # noqa: B018 - raises when not active
        self._after_commit.append(callback)

    async def flush(self) -> None:
        """Send pending changes to PostgreSQL now (errors arrive typed)."""
        try:
            await self.session.flush()
        except DataLayerError:
            raise
        except Exception as exc:
            if is_database_error(exc):
                raise translate(exc) from exc
            raise

    async def commit(self) -> None:
        """Flush and COMMIT; then run the after-commit callbacks.

        A connection lost while COMMIT was in flight raises TransientError with
        ``outcome_unknown=True``: the transaction may have committed.
        """
        session = self.session
        await self.flush()
        try:
            await session.commit()
        except Exception as exc:
            error = translate(exc)
            if isinstance(error, TransientError) and error.sqlstate not in ("40001", "40P01"):
                raise TransientError(
                    "connection lost while COMMIT was in flight: the outcome is unknown",
                    outcome_unknown=True,
                    sqlstate=error.sqlstate,
                ) from exc
            raise error from exc
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                await callback()
            except Exception:
                log.exception("after-commit callback failed; the commit stands")

    async def rollback(self) -> None:
        """Roll back now; the UoW stays usable and after-commit callbacks are dropped."""
        self._after_commit.clear()
        await self.session.rollback()
