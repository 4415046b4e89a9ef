"""Alerts: open alerts by severity/source/tag, and acknowledgement."""

from __future__ import annotations

from sqlalchemy import func, select

from alpha_data.cache import cached
from alpha_data.errors import InvalidDataError
from alpha_data.models import Alert, Severity
from alpha_data.repositories.base import Repository

__all__ = ["OPEN_ALERTS", "AlertRepository"]

# Every write of an alert can change what list_open returns (alpha_data.repositories.rules).
OPEN_ALERTS = "alerts:open"


class AlertRepository(Repository[Alert]):
    """Alerts raised by services; ``tags`` filter by JSONB containment."""

    model = Alert
    orderable = frozenset({"id", "created_at", "updated_at", "severity"})

    @cached(OPEN_ALERTS, many=True)
    async def list_open(
        self,
        severity: Severity | str | None = None,
        source: str | None = None,
        tag: str | None = None,
        *,
        cached: bool = True,
    ) -> list[Alert]:
        """Unacknowledged alerts, newest first, optionally by severity, source and tag (cached)."""
        stmt = select(Alert).where(Alert.acknowledged.is_(False))
        if severity is not None:
            try:
                stmt = stmt.where(Alert.severity == Severity(severity))
            except ValueError:
                raise InvalidDataError(f"unknown severity {severity!r}") from None
        if source is not None:
            if not isinstance(source, str):
                raise InvalidDataError("source must be a string")
            stmt = stmt.where(Alert.source == source)
        if tag is not None:
            if not isinstance(tag, str):
                raise InvalidDataError("tag must be a string")
            stmt = stmt.where(Alert.tags.contains([tag]))
        stmt = stmt.order_by(Alert.id.desc())
        return list((await self._execute(stmt)).scalars().all())

    async def acknowledge(self, alert_id: int, by: str) -> Alert:
        """Acknowledge an alert (idempotent: the first acknowledger and time stay)."""
        if not isinstance(by, str) or not by.strip() or len(by) > 64:
            raise InvalidDataError("by must be a non-empty name of at most 64 characters")
        alert = await self.get_one(alert_id)
        if not alert.acknowledged:
            alert.acknowledged = True
            alert.acknowledged_by = by
            alert.acknowledged_at = func.now()
            await self._flush()
            await self.session.refresh(alert, ["acknowledged_at"])
        return alert
