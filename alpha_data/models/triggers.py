"""The ``updated_at`` trigger every timestamped table carries, as DDL for any table.

PostgreSQL keeps ``updated_at`` current (``BEFORE UPDATE``, ``clock_timestamp()``),
so ORM flushes and Core ``UPDATE`` statements bump it alike. The library's first
migration installs the function ``alpha_data_touch_updated_at()``; an
application's table gets its trigger from ``create_updated_at_trigger(op, table)``
in its own revision (:mod:`alpha_data.migrations_support`) or, for
``metadata.create_all``, from the ``after_create`` listener that
:class:`~alpha_data.models.base.TimestampedIdMixin` attaches to each table.

Identifiers are quoted by the dialect's preparer, never pasted in raw.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.engine import Dialect

__all__ = [
    "TOUCH_FUNCTION",
    "TOUCH_FUNCTION_SQL",
    "create_trigger_sql",
    "drop_trigger_sql",
    "listen_for_create",
    "trigger_name",
]

#: The trigger function installed by the library's revision 0001.
TOUCH_FUNCTION = "alpha_data_touch_updated_at"

#: Its definition (idempotent form, for ``create_all`` without migrations).
TOUCH_FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {TOUCH_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END;
$$
"""


def trigger_name(table_name: str) -> str:
    """``trg_<table>_touch_updated_at``: the name the library's own tables use."""
    return f"trg_{table_name}_touch_updated_at"


def _qualified(dialect: Dialect, table_name: str, schema: str | None) -> str:
    preparer = dialect.identifier_preparer
    name = preparer.quote(table_name)
    return f"{preparer.quote_schema(schema)}.{name}" if schema else name


def create_trigger_sql(dialect: Dialect, table_name: str, schema: str | None = None) -> str:
    """``CREATE TRIGGER`` statement for ``table_name``, identifiers quoted for ``dialect``."""
    trigger = dialect.identifier_preparer.quote(trigger_name(table_name))
    return (
        f"CREATE TRIGGER {trigger} BEFORE UPDATE ON {_qualified(dialect, table_name, schema)} "
        f"FOR EACH ROW EXECUTE FUNCTION {TOUCH_FUNCTION}()"
    )


def drop_trigger_sql(dialect: Dialect, table_name: str, schema: str | None = None) -> str:
    """``DROP TRIGGER IF EXISTS`` statement matching :func:`create_trigger_sql`."""
    trigger = dialect.identifier_preparer.quote(trigger_name(table_name))
    return f"DROP TRIGGER IF EXISTS {trigger} ON {_qualified(dialect, table_name, schema)}"


def _after_create(table: Table, connection: Any, **_: Any) -> None:
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql(TOUCH_FUNCTION_SQL)
    connection.exec_driver_sql(create_trigger_sql(connection.dialect, table.name, table.schema))


def listen_for_create(table: Table) -> None:
    """Give ``table`` its trigger whenever ``metadata.create_all`` creates it."""
    if not event.contains(table, "after_create", _after_create):
        event.listen(table, "after_create", _after_create)
