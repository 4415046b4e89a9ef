"""The app's Alembic environment: its tables, its version table (alpha_data.migrations_support)."""

from __future__ import annotations

from alpha_data.migrations_support import run_app_migrations

import watchlists.models  # noqa: F401  (the app's tables on alpha_data's metadata)

run_app_migrations(version_table="watchlists_alembic_version")
