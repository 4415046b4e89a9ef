"""Health reports of the backing services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ComponentHealth"]


@dataclass(frozen=True)
class ComponentHealth:
    """Status of one backing service: reachable or not, round trip, and why not."""

    ok: bool
    latency_ms: float | None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
