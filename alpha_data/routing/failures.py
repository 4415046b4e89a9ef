"""Failure classification: may a read that failed on a replica be re-run on the primary?

By SQLSTATE (never message text): connection loss and shutdown (08xxx,
57Pxx) mean the replica is down; a recovery conflict (40001 on a standby:
WAL replay cancelled the query) and a full replica pool only cost that one
read. Anything else (a bad query, a constraint) would fail on the primary
too, so it is the caller's error.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from alpha_data.driver_errors import is_database_error, sqlstate_of
from alpha_data.errors import TransientError, translate
from alpha_data.sqlstates import CONNECTION_EXCEPTION_CLASSES, SERIALIZATION_FAILURE

__all__ = ["ReplicaFailure", "first_line", "replica_failure"]

ReplicaFailure = Literal["down", "recovery conflict", "pool timeout"]


def replica_failure(exc: BaseException) -> ReplicaFailure | None:
    """Why a statement failed on a replica, if re-running it on the primary can help."""
    code = sqlstate_of(exc)
    if code == SERIALIZATION_FAILURE:
        return "recovery conflict"  # cancelled by WAL replay on the standby
    if code is not None:
        return "down" if code.startswith(CONNECTION_EXCEPTION_CLASSES) else None
    if isinstance(exc, PoolTimeoutError):
        return "pool timeout"
    if isinstance(exc, (OSError, asyncio.TimeoutError)) or is_database_error(exc):
        return "down" if isinstance(translate(exc), TransientError) else None
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, bounded (for one-line warnings)."""
    return (str(exc).splitlines() or [""])[0][:200]
