"""Every column of every model as a filter: a page of rows or InvalidDataError, nothing else.

The filter guard in ``repositories/base.py`` decides by the column's type
before any SQL is built; SQLAlchemy 2.1 changed ``JSON.python_type`` (dict →
object), which once let ``alerts.list(tags=[...])`` reach PostgreSQL as
``jsonb = text`` (SQLSTATE 42883, a 500). The matrix is built from the
metadata, so a column added later is covered without editing this file; it
runs on whichever SQLAlchemy the venv has (both legs of the nox matrix).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import inspect

from alpha_data import Database
from alpha_data.errors import DataLayerError, InvalidDataError
from alpha_data.models import Base
from alpha_data.repositories import Repository
from tests.reliability.tools import Tally

#: Values of every shape a caller (or a query string parsed loosely) can pass.
VALUES: dict[str, Any] = {
    "int": 1,
    "negative": -5,
    "huge-int": 2**80,
    "bool": True,
    "str": "risk",
    "str-number": "1",
    "empty": "",
    "decimal": Decimal("1.5"),
    "decimal-nan": Decimal("NaN"),
    "float": 1.5,
    "aware": datetime(2024, 1, 1, tzinfo=timezone.utc),
    "naive": datetime(2024, 1, 1),
    "list": ["risk"],
    "list-of-lists": [["risk"]],
    "dict": {"a": 1},
    "bytes": b"risk",
    "object": object(),
}

MODELS = sorted(Base.registry.mappers, key=lambda m: m.class_.__name__)
CASES = [
    pytest.param(mapper.class_, column.key, id=f"{mapper.class_.__name__}.{column.key}")
    for mapper in MODELS
    for column in mapper.column_attrs
]


def _repository(model: type[Any], uow: Any) -> Repository[Any]:
    repo_cls = type(f"{model.__name__}Probe", (Repository,), {"model": model})
    repo: Repository[Any] = repo_cls(uow.session, read_only=True)
    return repo


def test_every_column_of_every_table_is_in_the_matrix() -> None:
    tables = {mapper.local_table.name for mapper in MODELS}
    assert {"users", "api_keys", "portfolios", "positions", "trades", "alerts"} <= tables
    columns = {c.id for c in CASES}
    assert {"Alert.tags", "ApiKey.permissions", "Trade.side", "Position.quantity"} <= columns


@pytest.mark.parametrize(("model", "column"), CASES)
async def test_any_value_on_any_column_is_rows_or_invalid_data(
    db: Database, tally: Tally, model: type[Any], column: str
) -> None:
    outcomes: dict[str, str] = {}
    values = dict(VALUES)
    enum_class = getattr(inspect(model).columns[column].type, "enum_class", None)
    if enum_class is not None:
        values["enum-member"] = next(iter(enum_class)).value
    async with db.unit_of_work(read_only=True) as uow:  # autocommit: no aborted transaction
        repo = _repository(model, uow)
        for name, value in values.items():
            for call in ("list", "count"):
                try:
                    await getattr(repo, call)(**{column: value})
                    outcomes[f"{name}/{call}"] = "rows"
                except InvalidDataError:
                    outcomes[f"{name}/{call}"] = "invalid"
                except DataLayerError as exc:  # the bug this file guards against
                    pytest.fail(f"{model.__name__}.{column}={name} via {call}: {exc!r}")
            tally.case("filter-matrix", 2)
    secret = column in getattr(model, "__secret_attributes__", frozenset())
    json_column = type(inspect(model).columns[column].type).__name__ in ("JSON", "JSONB")
    if secret or json_column:
        assert set(outcomes.values()) == {"invalid"}, outcomes
    else:
        assert "rows" in outcomes.values(), outcomes  # a proper value still filters


@pytest.mark.parametrize(
    ("repository", "filters"),
    [
        ("alerts", {"tags": ["risk"]}),
        ("alerts", {"tags": "risk"}),
        ("api_keys", {"permissions": ["read"]}),
        ("api_keys", {"permissions": "read"}),
    ],
)
async def test_json_list_filters_from_the_issue_are_invalid_data(
    db: Database, repository: str, filters: dict[str, Any]
) -> None:
    async with db.unit_of_work(read_only=True) as uow:
        repo = getattr(uow, repository)
        with pytest.raises(InvalidDataError, match="JSON field"):
            await repo.list(**filters)
        with pytest.raises(InvalidDataError):
            await repo.count(**filters)
