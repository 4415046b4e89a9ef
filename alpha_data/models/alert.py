"""Alerts raised by the fund's services and acknowledged by people."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from alpha_data.models.base import Base, StrEnum, TimestampedIdMixin, enum_column
from alpha_data.models.json import JsonList

__all__ = ["Alert", "Severity"]


class Severity(StrEnum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Alert(TimestampedIdMixin, Base):
    """An alert; ``tags`` is a JSONB list of strings, filtered by containment."""

    __tablename__ = "alerts"

    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    severity: Mapped[Severity] = mapped_column(enum_column(Severity, "severity"))
    source: Mapped[str] = mapped_column(String(100))
    tags: Mapped[list[str]] = mapped_column(
        JsonList, default=list, server_default=text("'[]'::jsonb")
    )
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}
    __table_args__ = (
        Index(
            "ix_alerts_open_severity",
            "severity",
            "id",
            postgresql_where=text("NOT acknowledged"),
        ),
        Index("ix_alerts_tags", "tags", postgresql_using="gin"),
    )
