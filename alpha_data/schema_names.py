"""The constraint naming convention and the names of the constraints code matches on.

Errors carry the constraint PostgreSQL named (``DataLayerError.constraint``);
services and the error messages branch on it. The names are built here from
the one naming convention the metadata uses (``models.base.metadata``), so a
change of convention moves them together, and a test checks that each name
exists in the schema. This module imports nothing of alpha_data: errors,
models and services all use it.
"""

from __future__ import annotations

__all__ = [
    "API_KEYS_PREFIX_UNIQUE",
    "API_KEYS_USER_FK",
    "NAMING_CONVENTION",
    "POSITIONS_PORTFOLIO_FK",
    "POSITIONS_SYMBOL_UNIQUE",
    "TRADES_EXTERNAL_ID_UNIQUE",
    "TRADES_PORTFOLIO_FK",
    "USERS_EMAIL_UNIQUE",
    "USERS_USERNAME_UNIQUE",
    "check_name",
    "foreign_key_name",
    "unique_name",
]

#: SQLAlchemy naming convention of ``alpha_data.models.base.metadata``.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def unique_name(table: str, *columns: str) -> str:
    """The conventional name of a unique constraint/index on ``columns`` of ``table``."""
    return NAMING_CONVENTION["uq"] % {"table_name": table, "column_0_N_name": "_".join(columns)}


def foreign_key_name(table: str, column: str, referred_table: str) -> str:
    """The conventional name of the foreign key ``table.column`` → ``referred_table``."""
    return NAMING_CONVENTION["fk"] % {
        "table_name": table,
        "column_0_N_name": column,
        "referred_table_name": referred_table,
    }


def check_name(table: str, name: str) -> str:
    """The conventional name of the CHECK constraint ``name`` on ``table``."""
    return NAMING_CONVENTION["ck"] % {"table_name": table, "constraint_name": name}


USERS_USERNAME_UNIQUE = unique_name("users", "username")
#: A unique index on ``lower(email)``: an expression, so named after what it holds.
USERS_EMAIL_UNIQUE = unique_name("users", "email", "lower")
API_KEYS_PREFIX_UNIQUE = unique_name("api_keys", "prefix")
API_KEYS_USER_FK = foreign_key_name("api_keys", "user_id", "users")
POSITIONS_SYMBOL_UNIQUE = unique_name("positions", "portfolio_id", "symbol")
POSITIONS_PORTFOLIO_FK = foreign_key_name("positions", "portfolio_id", "portfolios")
TRADES_EXTERNAL_ID_UNIQUE = unique_name("trades", "external_id")
TRADES_PORTFOLIO_FK = foreign_key_name("trades", "portfolio_id", "portfolios")
