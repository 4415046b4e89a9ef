"""Read routing: read-only units of work on streaming replicas, everything else on the primary.

* ``db.unit_of_work(read_only=True)`` (and so every cached read's miss in it)
  is served by a replica, round-robin over the usable ones. A replica is
  usable while its last probe succeeded, it is in recovery (not promoted),
  it has replayed past the fence, and its lag at the moment the route is
  chosen is at most ``replica_max_lag``. With none usable the primary serves,
  and a read-only unit of work is read-only there too (a READ ONLY
  transaction).
* Write units of work, ``db.run`` and SERIALIZABLE read-only units of work
  (a hot standby cannot run them) always use the primary.
* The fence: the primary's WAL position when the monitor starts (a replica
  serves nothing before it replayed that far), then, with
  ``read_your_writes``, the position after each commit of this Database.
* A replica that fails (refused, lost, shutting down) is marked down with a
  warning and probed again with exponential back-off; a read-only statement
  that failed on it is re-run on the primary when that is safe.

Modules: ``router`` (choice and fence), ``monitor`` (background probes, lag),
``probes`` (the SQL the monitor runs), ``replica`` (per-replica state and a
session's route), ``sessions`` (session classes and fallback), ``failures``
(which errors a fallback can cure). See docs/scaling.md.
"""

from alpha_data.routing.failures import replica_failure
from alpha_data.routing.monitor import Monitor
from alpha_data.routing.probes import (
    CommitPosition,
    EngineProbes,
    PrimaryPosition,
    Probes,
    ReplicaPosition,
)
from alpha_data.routing.replica import Replica, Route
from alpha_data.routing.router import Fence, Router, primary_read_options
from alpha_data.routing.sessions import (
    OPTIONS_KEY,
    ROUTE_KEY,
    ROUTER_KEY,
    FencingSession,
    RoutedReadSession,
    session_options,
)

__all__ = [
    "OPTIONS_KEY",
    "ROUTER_KEY",
    "ROUTE_KEY",
    "CommitPosition",
    "EngineProbes",
    "Fence",
    "FencingSession",
    "Monitor",
    "PrimaryPosition",
    "Probes",
    "Replica",
    "ReplicaPosition",
    "Route",
    "RoutedReadSession",
    "Router",
    "primary_read_options",
    "replica_failure",
    "session_options",
]
