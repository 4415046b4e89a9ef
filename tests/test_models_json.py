"""In-place changes to JSON columns are saved; relationships load with ``awaitable_attrs``.

Every JSON column is checked (found from the metadata), on every way an
object reaches a caller: the ORM, a bulk insert, and the cache.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import JSON, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.mutable import Mutable

from alpha_data import Database
from alpha_data.models import Alert, ApiKey, Base, User
from alpha_data.testing.factories import AlertFactory, ApiKeyFactory, UserFactory


async def _stored(db: Database, model: type[Any], id_: int, column: str) -> Any:
    """The column's value as PostgreSQL holds it (a fresh unit of work, no cache)."""
    async with db.unit_of_work() as uow:
        table = model.__table__
        return (
            await uow.session.execute(select(table.c[column]).where(table.c.id == id_))
        ).scalar_one()


def test_every_json_column_tracks_mutations() -> None:
    json_columns = [
        (mapper.class_.__name__, column.key)
        for mapper in Base.registry.mappers
        for column in mapper.columns
        if isinstance(column.type, JSON)
    ]
    assert ("Alert", "tags") in json_columns
    assert ("ApiKey", "permissions") in json_columns
    for model_name, key in json_columns:
        model = next(m.class_ for m in Base.registry.mappers if m.class_.__name__ == model_name)
        for value in ([], {}):
            instance = model(**{key: value})
            assert isinstance(getattr(instance, key), Mutable), f"{model_name}.{key}"
        assert model(**{key: True}).__dict__[key] is True  # scalars stay as they are


async def test_dict_and_scalar_json_values_round_trip_and_dicts_track(db: Database) -> None:
    async with db.unit_of_work() as uow:
        as_dict = await uow.alerts.add(AlertFactory.build(tags={"a": 1}))
        as_scalar = await uow.alerts.add(AlertFactory.build(tags=7))
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.alerts.get_one(as_dict.id)
        loaded.tags["b"] = 2
        assert (await uow.alerts.get_one(as_scalar.id)).tags == 7
        await uow.commit()
    assert await _stored(db, Alert, as_dict.id, "tags") == {"a": 1, "b": 2}


async def test_alert_tags_append_is_saved(db: Database) -> None:
    async with db.unit_of_work() as uow:
        alert = await uow.alerts.add(AlertFactory.build(tags=["risk"]))
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.alerts.get_one(alert.id)
        loaded.tags.append("b")
        await uow.commit()
    assert await _stored(db, Alert, alert.id, "tags") == ["risk", "b"]
    async with db.unit_of_work() as uow:
        loaded = await uow.alerts.get_one(alert.id)
        loaded.tags.remove("risk")
        loaded.tags.extend(["c", "d"])
        loaded.tags[0] = "B"
        await uow.commit()
    assert await _stored(db, Alert, alert.id, "tags") == ["B", "c", "d"]


async def test_mutation_right_after_add_in_the_same_block_is_saved(db: Database) -> None:
    async with db.unit_of_work() as uow:
        alert = await uow.alerts.add(AlertFactory.build(tags=["risk"]))
        alert.tags.append("later")
        await uow.commit()
    assert await _stored(db, Alert, alert.id, "tags") == ["risk", "later"]


async def test_api_key_permissions_append_is_saved(db: Database) -> None:
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build())
        key = await uow.api_keys.add(ApiKeyFactory.build(user_id=user.id, permissions=["read"]))
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.api_keys.get_one(key.id)
        loaded.permissions.append("trade")
        await uow.commit()
    assert await _stored(db, ApiKey, key.id, "permissions") == ["read", "trade"]


async def test_objects_from_a_bulk_insert_track_mutations(db: Database) -> None:
    async with db.unit_of_work() as uow:
        alerts = await uow.alerts.add_many([AlertFactory.build(tags=["x"]) for _ in range(3)])
        for alert in alerts:
            alert.tags.append("bulk")
        await uow.commit()
    for alert in alerts:
        assert await _stored(db, Alert, alert.id, "tags") == ["x", "bulk"]


async def test_objects_from_the_cache_track_mutations(db: Database) -> None:
    async with db.unit_of_work() as uow:
        alert = await uow.alerts.add(AlertFactory.build(tags=["cached"]))
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        await uow.alerts.list_open()  # fills the cache
    hits = db.cache.stats().hits
    async with db.unit_of_work() as uow:
        (loaded,) = [a for a in await uow.alerts.list_open() if a.id == alert.id]
        assert db.cache.stats().hits > hits  # this object came from the cache
        loaded.tags.append("changed")
        await uow.commit()
    assert await _stored(db, Alert, alert.id, "tags") == ["cached", "changed"]


async def test_awaitable_attrs_load_a_relationship_inside_the_block(db: Database) -> None:
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build())
        for _ in range(2):
            await uow.api_keys.add(ApiKeyFactory.build(user_id=user.id))
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.users.get_one(user.id)
        with pytest.raises(InvalidRequestError):
            _ = loaded.api_keys  # plain access never emits SQL behind the caller's back
        keys = await loaded.awaitable_attrs.api_keys
        assert sorted(k.user_id for k in keys) == [user.id, user.id]
        owner = await keys[0].awaitable_attrs.user
        assert owner is loaded
    assert len(loaded.api_keys) == 2  # loaded inside the block, usable after it
    assert isinstance(loaded, User)
