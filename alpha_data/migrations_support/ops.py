"""Alembic operations for an application's revisions: the ``updated_at`` trigger.

``create_updated_at_trigger(op, "watchlists")`` in ``upgrade()`` right after
``op.create_table``; ``drop_updated_at_trigger(op, "watchlists")`` in
``downgrade()`` (dropping the table drops it too). The trigger function itself
belongs to the library's revision 0001, which the app's tree depends on.
"""

from __future__ import annotations

from typing import Any

from alpha_data.models.triggers import create_trigger_sql, drop_trigger_sql

__all__ = ["create_updated_at_trigger", "drop_updated_at_trigger"]


def create_updated_at_trigger(op: Any, table: str, schema: str | None = None) -> None:
    """Add the ``BEFORE UPDATE`` trigger that keeps ``table.updated_at`` current."""
    op.execute(create_trigger_sql(op.get_context().dialect, table, schema))


def drop_updated_at_trigger(op: Any, table: str, schema: str | None = None) -> None:
    """Remove the trigger added by :func:`create_updated_at_trigger`."""
    op.execute(drop_trigger_sql(op.get_context().dialect, table, schema))
