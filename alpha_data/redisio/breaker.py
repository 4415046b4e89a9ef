"""Fail-open bookkeeping for one backend: a circuit breaker with throttled warnings.

After a failure the breaker stays open for ``cooldown`` seconds: callers skip
the backend entirely (a stalled Redis costs one socket timeout, not one per
request). The next call after the cooldown probes again. A warning is logged
at most once per ``warn_interval``; recovery is logged once.
"""

from __future__ import annotations

import logging
import time

__all__ = ["Breaker"]


class Breaker:
    """Open for ``cooldown`` s after each failure; counts failures and warns sparingly."""

    def __init__(
        self,
        *,
        cooldown: float = 1.0,
        warn_interval: float = 30.0,
        name: str = "cache",
        fallback: str = "reading from PostgreSQL",
    ) -> None:
        self.cooldown = cooldown
        self.fallback = fallback
        self.warn_interval = warn_interval
        self.name = name
        self.errors = 0
        self.last_error: str | None = None
        self._open_until = 0.0
        self._failing = False
        self._last_warning = float("-inf")
        self._log = logging.getLogger(f"alpha_data.{name}")

    def allow(self) -> bool:
        """False while open (the caller should not touch the backend)."""
        return not self._failing or time.monotonic() >= self._open_until

    @property
    def degraded(self) -> bool:
        """True from a failure until the next success."""
        return self._failing

    def failure(self, exc: BaseException, doing: str) -> None:
        """Record a failed call; open the circuit; warn if the interval has passed."""
        now = time.monotonic()
        self.errors += 1
        self.last_error = f"{doing}: {type(exc).__name__}: {exc}"
        self._failing = True
        self._open_until = now + self.cooldown
        if now - self._last_warning >= self.warn_interval:
            self._last_warning = now
            self._log.warning("%s unavailable (%s); %s", self.name, self.last_error, self.fallback)

    def success(self) -> None:
        """Record a successful call (closes the circuit)."""
        if self._failing:
            self._failing = False
            self._log.info("%s reachable again", self.name)
