"""Routes, fallback to the primary and failure classification, without servers."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from alpha_data.cache import invalidation
from alpha_data.routing import (
    OPTIONS_KEY,
    ROUTE_KEY,
    ROUTER_KEY,
    FencingSession,
    RoutedReadSession,
    primary_read_options,
    replica_failure,
    session_options,
)
from alpha_data.routing.sessions import fall_back
from alpha_data.uow import DataSession, ReadOnlySession
from tests.unit.fakes import make_router
from tests.unit.test_routing_monitor import settle

AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


def wrapped(exc: Exception) -> DBAPIError:
    """A driver error as SQLAlchemy raises it."""
    return DBAPIError("SELECT 1", None, exc)


def routed_session(options: dict[str, Any]) -> Session:
    router, _, _ = make_router()
    settle(router)
    session = Session()
    session.info[ROUTER_KEY] = router
    session.info[ROUTE_KEY] = router.route(options)
    assert session.info[ROUTE_KEY].replica is router.replicas[0]
    return session


def test_one_route_key_for_the_router_and_the_cache() -> None:
    assert ROUTE_KEY is invalidation.ROUTE_KEY
    session = routed_session(AUTOCOMMIT)
    router = session.info[ROUTER_KEY]
    assert invalidation.replica_position(session) == router.replicas[0].replay_lsn > 0
    session.info[ROUTE_KEY] = router.primary_route(AUTOCOMMIT)
    assert invalidation.replica_position(session) is None


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), "down"),
        (asyncpg.exceptions.AdminShutdownError("shutdown"), "down"),
        (asyncpg.exceptions.CannotConnectNowError("starting"), "down"),
        (asyncpg.exceptions.SerializationError("conflict with recovery"), "recovery conflict"),
        (asyncpg.exceptions.UniqueViolationError("dup"), None),
        (asyncpg.exceptions.UndefinedTableError("no table"), None),
        (ConnectionRefusedError("refused"), "down"),
        (PoolTimeoutError("pool"), "pool timeout"),
        (ValueError("a bug"), None),
    ],
)
def test_failure_classification(exc: Exception, kind: str | None) -> None:
    assert replica_failure(exc) == kind
    if isinstance(exc, asyncpg.PostgresError):
        assert replica_failure(wrapped(exc)) == kind


def test_a_lost_replica_is_marked_down_and_the_read_moves_to_the_primary() -> None:
    session = routed_session(AUTOCOMMIT)
    router = session.info[ROUTER_KEY]
    replayed = router.replicas[0].replay_lsn
    assert fall_back(session, wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("x")))
    route = session.info[ROUTE_KEY]
    assert route.replica is None and route.options == AUTOCOMMIT
    assert route.engine.get_execution_options()["postgresql_readonly"] is True
    assert not router.replicas[0].healthy and router.fallbacks == 1
    # What the session read before may come from the replica: the cache still sees it.
    assert invalidation.replica_position(session) == replayed
    # A restarted standby may show less than it did: its position is learned again.
    assert router.replicas[0].replay_lsn == 0


def test_a_recovery_conflict_re_runs_on_the_primary_without_marking_the_replica_down() -> None:
    session = routed_session(AUTOCOMMIT)
    router = session.info[ROUTER_KEY]
    assert fall_back(session, wrapped(asyncpg.exceptions.SerializationError("conflict")))
    assert session.info[ROUTE_KEY].replica is None
    assert router.replicas[0].healthy and router.fallbacks == 1


def test_a_query_error_is_the_callers_not_a_fallback() -> None:
    session = routed_session(AUTOCOMMIT)
    assert not fall_back(session, wrapped(asyncpg.exceptions.UndefinedTableError("x")))
    assert session.info[ROUTE_KEY].replica is not None


def test_a_transaction_falls_back_only_before_its_first_statement() -> None:
    options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    session = routed_session(options)
    session.info[ROUTE_KEY].statements = 1
    lost = wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("x"))
    assert not fall_back(session, lost)  # its snapshot cannot move to another server
    session.info[ROUTE_KEY].statements = 0
    assert fall_back(session, lost)


def test_autocommit_reads_fall_back_after_earlier_statements() -> None:
    session = routed_session(AUTOCOMMIT)
    session.info[ROUTE_KEY].statements = 5
    assert fall_back(session, wrapped(asyncpg.exceptions.AdminShutdownError("x")))


def test_read_only_sessions_are_read_only_transactions_on_the_primary() -> None:
    assert primary_read_options(AUTOCOMMIT) == {
        "isolation_level": "READ COMMITTED",
        "postgresql_readonly": True,
    }
    assert primary_read_options({}) == {
        "isolation_level": "READ COMMITTED",
        "postgresql_readonly": True,
    }
    assert primary_read_options({"isolation_level": "REPEATABLE READ"}) == {
        "isolation_level": "REPEATABLE READ",
        "postgresql_readonly": True,
    }
    router, _, _ = make_router()
    route = router.route(AUTOCOMMIT)  # start fence pending: the primary
    assert route.replica is None
    options = route.engine.get_execution_options()
    assert options["isolation_level"] == "READ COMMITTED" and options["postgresql_readonly"]


def test_session_classes_per_kind_of_session() -> None:
    router, _, _ = make_router()
    assert session_options(None, read_only=True, execution_options=AUTOCOMMIT) == {
        "sync_session_class": ReadOnlySession
    }
    assert session_options(None, read_only=False, execution_options={}) == {
        "sync_session_class": DataSession
    }
    write = session_options(router, read_only=False, execution_options={})
    assert write["sync_session_class"] is FencingSession and write["info"][ROUTER_KEY] is router
    read = session_options(router, read_only=True, execution_options=AUTOCOMMIT)
    assert read["sync_session_class"] is RoutedReadSession
    assert read["info"][OPTIONS_KEY] == AUTOCOMMIT
    serializable = {"isolation_level": "SERIALIZABLE"}
    assert session_options(router, read_only=True, execution_options=serializable) == {
        "sync_session_class": ReadOnlySession
    }


def test_a_commit_of_a_fencing_session_moves_the_fence() -> None:
    router, _, _ = make_router()
    settle(router)
    session = FencingSession(info={ROUTER_KEY: router})
    session.commit()  # nothing to flush, no connection: the after_commit hook still runs
    assert router.fence.pending


def test_a_routed_session_binds_its_route_once() -> None:
    router, _, _ = make_router()
    session = RoutedReadSession(info={ROUTER_KEY: router, OPTIONS_KEY: AUTOCOMMIT})
    first = session.get_bind()
    route = session.info[ROUTE_KEY]
    assert route.replica is None  # the start fence is pending: the primary
    assert first is route.engine.sync_engine
    settle(router)
    assert session.get_bind() is first  # kept until the transaction ends
    session.info.pop(ROUTE_KEY)
    on_replica = session.get_bind()
    assert session.info[ROUTE_KEY].replica is router.replicas[0]
    assert on_replica is session.info[ROUTE_KEY].engine.sync_engine
