"""watchlists: the app's first table, after alpha_data's schema.

A base of its own branch (label ``watchlists``) that depends on alpha_data's
head at the time (``0002``): Alembic refuses to apply it before the library's
users table exists. Reviewed from an autogenerate draft (which saw only this
app's tables); the ``updated_at`` trigger comes from alpha_data.

Revision ID: w0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alpha_data.migrations_support import create_updated_at_trigger
from sqlalchemy.dialects import postgresql

revision: str = "w0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("watchlists",)
depends_on: str | Sequence[str] | None = "0002"


def upgrade() -> None:
    op.create_table(
        "watchlists",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("symbols", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("length(name) > 0", name=op.f("ck_watchlists_name_not_empty")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_watchlists_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watchlists")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_watchlists_user_id_name")),
    )
    op.create_index(op.f("ix_watchlists_user_id"), "watchlists", ["user_id"], unique=False)
    create_updated_at_trigger(op, "watchlists")


def downgrade() -> None:
    op.drop_index(op.f("ix_watchlists_user_id"), table_name="watchlists")
    op.drop_table("watchlists")  # drops its trigger too
