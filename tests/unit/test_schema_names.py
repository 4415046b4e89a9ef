"""The constraint names code matches on exist in the schema and follow the naming convention."""

from __future__ import annotations

import pytest

from alpha_data import schema_names as names
from alpha_data.models import Base
from alpha_data.models.base import metadata

CONSTANTS = [
    names.USERS_USERNAME_UNIQUE,
    names.USERS_EMAIL_UNIQUE,
    names.API_KEYS_PREFIX_UNIQUE,
    names.API_KEYS_USER_FK,
    names.POSITIONS_SYMBOL_UNIQUE,
    names.POSITIONS_PORTFOLIO_FK,
    names.TRADES_EXTERNAL_ID_UNIQUE,
    names.TRADES_PORTFOLIO_FK,
]


def _schema_names() -> set[str]:
    found: set[str] = set()
    for table in Base.metadata.tables.values():
        found.update(str(c.name) for c in table.constraints if c.name)
        found.update(str(i.name) for i in table.indexes if i.name)
    return found


@pytest.mark.parametrize("name", CONSTANTS)
def test_each_constant_names_a_constraint_of_the_schema(name: str) -> None:
    assert name in _schema_names()


def test_the_metadata_uses_the_one_naming_convention() -> None:
    assert dict(metadata.naming_convention) == names.NAMING_CONVENTION
    fks = {
        str(fk.name)
        for table in Base.metadata.tables.values()
        for fk in table.foreign_key_constraints
    }
    assert {names.API_KEYS_USER_FK, names.POSITIONS_PORTFOLIO_FK, names.TRADES_PORTFOLIO_FK} <= fks
    assert names.check_name("trades", "side") in _schema_names()
