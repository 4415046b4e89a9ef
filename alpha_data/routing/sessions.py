"""Session classes of routed Databases: commits fence, reads follow their Route.

* ``FencingSession`` (write units of work): each commit moves the Router's
  fence (read-your-writes).
* ``RoutedReadSession`` (read-only units of work): the route is chosen when
  the first statement needs a connection and kept until the transaction
  ends (an autocommit session: until it is closed). A replica that cannot
  give a connection, or fails a statement run through ``execute``, is
  replaced by the primary when that is safe (``Route.may_fall_back``).

The route lives in ``session.info[ROUTE_KEY]``; the cache reads the same key
(``alpha_data.cache.invalidation.replica_position``), which is why the key is
defined there, below both users.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from alpha_data.cache.invalidation import ROUTE_KEY
from alpha_data.routing.failures import replica_failure
from alpha_data.routing.replica import Route
from alpha_data.routing.router import Router
from alpha_data.uow import DataSession, ReadOnlySession

__all__ = [
    "OPTIONS_KEY",
    "ROUTER_KEY",
    "ROUTE_KEY",
    "FencingSession",
    "RoutedReadSession",
    "fall_back",
    "session_options",
]

log = logging.getLogger("alpha_data.routing")

#: Where a session finds its Router and its execution options.
ROUTER_KEY = "alpha_data.router"
OPTIONS_KEY = "alpha_data.route_options"


class FencingSession(DataSession):
    """Session of write units of work: each commit fences replica reads (read-your-writes)."""


@event.listens_for(FencingSession, "after_commit")
def _fence_after_commit(session: Session) -> None:
    router: Router | None = session.info.get(ROUTER_KEY)
    if router is not None:
        router.committed()


class RoutedReadSession(ReadOnlySession):
    """Read-only session whose statements go where its Router sends them (module docstring)."""

    def get_bind(self, mapper: Any = None, *, bind: Any = None, **kw: Any) -> Engine | Connection:
        """The engine of this session's route (a replica's, or the primary's)."""
        if bind is not None:
            return super().get_bind(mapper, bind=bind, **kw)
        route: Route | None = self.info.get(ROUTE_KEY)
        if route is None:
            router: Router | None = self.info.get(ROUTER_KEY)
            if router is None:
                return super().get_bind(mapper, **kw)
            route = router.route(self.info.get(OPTIONS_KEY) or {})
            self.info[ROUTE_KEY] = route
        return route.engine.sync_engine

    def connection(
        self,
        bind_arguments: dict[str, Any] | None = None,
        execution_options: Any = None,
    ) -> Connection:
        """The route's connection; the primary's when the replica refuses one.

        Whoever asks for the connection runs statements on it that this
        session cannot re-run: the route counts as used from here on.
        """
        try:
            conn = super().connection(bind_arguments, execution_options)
        except Exception as exc:
            if (bind_arguments or {}).get("bind") is not None or not fall_back(self, exc):
                raise
            conn = super().connection(bind_arguments, execution_options)
        route: Route | None = self.info.get(ROUTE_KEY)
        if route is not None:
            route.statements += 1
        return conn


def fall_back(session: Session, exc: BaseException) -> bool:
    """Switch ``session`` to the primary after its replica failed, if that is safe."""
    route: Route | None = session.info.get(ROUTE_KEY)
    kind = replica_failure(exc)
    if route is None or route.replica is None or kind is None or not route.may_fall_back:
        return False
    if kind == "down":
        route.router.failed(route.replica, exc)
    else:
        log.info(
            "read on replica %s failed (%s); re-running it on the primary",
            route.replica.name,
            kind,
        )
    route.router.fallbacks += 1
    primary = route.router.primary_route(route.options)
    primary.replay_lsn = route.replay_lsn  # rows read before may come from the replica
    session.info[ROUTE_KEY] = primary
    return True


@event.listens_for(RoutedReadSession, "do_orm_execute")
def _read_with_fallback(state: ORMExecuteState) -> Any:
    """Run the statement; if its replica failed and it is safe, re-run it on the primary."""
    session = state.session
    if ROUTER_KEY not in session.info or state.bind_arguments.get("bind") is not None:
        return None
    try:
        result = state.invoke_statement()
    except Exception as exc:
        if not fall_back(session, exc):
            raise
        result = state.invoke_statement()
    route: Route | None = session.info.get(ROUTE_KEY)
    if route is not None:
        route.statements += 1
    return result


@event.listens_for(RoutedReadSession, "after_transaction_end")
def _forget_route(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(ROUTE_KEY, None)


def session_options(
    router: Router | None, *, read_only: bool, execution_options: Mapping[str, Any]
) -> dict[str, Any]:
    """``sessionmaker`` arguments (session class, info) for one kind of session.

    Without a router: the plain classes. Write sessions fence replica reads
    at each commit; read-only ones are routed, except SERIALIZABLE (which a
    hot standby refuses).
    """
    if router is None or not router.replicas:
        return {"sync_session_class": ReadOnlySession if read_only else DataSession}
    if not read_only:
        return {"sync_session_class": FencingSession, "info": {ROUTER_KEY: router}}
    if execution_options.get("isolation_level") == "SERIALIZABLE":
        return {"sync_session_class": ReadOnlySession}
    return {
        "sync_session_class": RoutedReadSession,
        "info": {ROUTER_KEY: router, OPTIONS_KEY: dict(execution_options)},
    }
