"""One read replica as the router sees it, and the route one read-only session takes.

Staleness is kept as one point in time per replica, ``fresh_as_of``: every
commit that finished on the primary before it is visible on the replica
(an upper bound on what the replica can be missing; see routing.monitor for
how it is learned). A replica's lag at time ``now`` is ``now - fresh_as_of``,
which grows while nobody probes it: the rule "lag <= replica_max_lag" is
checked with the clock at the moment a route is chosen, so no read starts on
a replica that may be further behind than the bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alpha_data.routing.router import Router

__all__ = ["Replica", "Route", "Variants"]

#: Engines with execution options (isolation, read-only), one per option set.
Variants = dict[tuple[tuple[str, Any], ...], AsyncEngine]


@dataclass(eq=False)
class Replica:
    """One read replica and what the monitor last learned about it.

    It starts unusable: nothing is known about its lag until the monitor
    has probed it and it has replayed past the start fence.
    """

    name: str
    engine: AsyncEngine
    healthy: bool = True
    replay_lsn: int = 0
    #: Clock time before which every commit on the primary is visible here (None: unknown).
    fresh_as_of: float | None = None
    lag_bytes: int | None = None
    lagging: bool = False
    #: Clock time of the next probe the monitor owes this replica.
    due_at: float = 0.0
    failures: int = 0
    #: Clock time of the last failure: a probe sent before it says nothing about now.
    failed_at: float = float("-inf")
    retry_at: float = 0.0
    last_error: str | None = None
    served: int = 0
    variants: Variants = field(default_factory=dict)

    def lag(self, now: float) -> float | None:
        """Upper bound of the replica's staleness at ``now`` (seconds), None if unknown."""
        if self.fresh_as_of is None:
            return None
        return max(0.0, now - self.fresh_as_of)

    def usable(self, fence: int, max_lag: float, now: float) -> bool:
        """True when a read may start here at ``now``: healthy, past ``fence``, within the bound."""
        lag = self.lag(now)
        return self.healthy and self.replay_lsn >= fence and lag is not None and lag <= max_lag

    def status(self, now: float) -> dict[str, Any]:
        """A JSON-friendly summary for health reports (lag as of ``now``)."""
        lag = self.lag(now)
        return {
            "replica": self.name,
            "healthy": self.healthy,
            "lag_s": None if lag is None else round(lag, 4),
            "lag_bytes": self.lag_bytes,
            "served": self.served,
            "error": self.last_error,
        }


@dataclass(eq=False)
class Route:
    """Where one read-only session's statements go (``replica`` None: the primary).

    ``replay_lsn``: None while only the primary served this session; else
    the replay LSN its replica had at least reached when the route was chosen
    (kept when the session falls back to the primary: what it read before may
    be that old). The cache stores a miss only if this covers its tags.
    """

    router: Router
    replica: Replica | None
    engine: AsyncEngine
    options: Mapping[str, Any]
    statements: int = 0
    replay_lsn: int | None = None

    @property
    def may_fall_back(self) -> bool:
        """A failed statement may re-run on the primary without breaking the caller's view."""
        autocommit = self.options.get("isolation_level") == "AUTOCOMMIT"
        return self.replica is not None and (autocommit or self.statements == 0)
