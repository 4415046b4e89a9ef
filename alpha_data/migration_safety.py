"""Downgrades that would drop rows refuse unless the operator says so.

A revision's ``downgrade()`` calls ``refuse_data_loss(...)`` with the tables it
is about to drop, before dropping anything. When any of them holds a row, the
downgrade stops with an error naming those tables; the operator re-runs it
with ``alembic downgrade <rev> -x allow_data_loss=true`` (or sets
``config.attributes["allow_data_loss"] = True`` when calling Alembic from
Python). Empty tables are dropped without asking. In offline mode (``--sql``)
nothing can be counted and the generated script is only text: no check.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

__all__ = ["DataLossRefused", "allow_data_loss", "refuse_data_loss"]

_TRUE = frozenset({"1", "true", "yes", "on"})


class DataLossRefused(CommandError):
    """A downgrade would drop tables that hold rows and was not forced."""


def allow_data_loss() -> bool:
    """True when the operator passed ``-x allow_data_loss=true`` (or the config attribute)."""
    config: Any = context.config
    if config.attributes.get("allow_data_loss") is True:
        return True
    flag = context.get_x_argument(as_dictionary=True).get("allow_data_loss", "")
    return str(flag).strip().lower() in _TRUE


def refuse_data_loss(*tables: str) -> None:
    """Raise DataLossRefused when one of ``tables`` (``schema.name`` or ``name``) has a row."""
    if context.is_offline_mode() or allow_data_loss():
        return
    bind = op.get_bind()
    holding = []
    for qualified in tables:
        schema, _, name = qualified.rpartition(".")
        table = sa.table(name, schema=schema or None)
        if bind.execute(sa.select(sa.exists().select_from(table))).scalar():
            holding.append(qualified)
    if holding:
        raise DataLossRefused(
            f"this downgrade would drop {', '.join(holding)} with the rows they hold; "
            "nothing was dropped. Back them up, then re-run with -x allow_data_loss=true "
            "to drop them (see docs/operations.md)"
        )
