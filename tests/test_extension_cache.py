"""Cache rules an application adds compose with the library's, and cascades invalidate.

* ``invalidated_by`` adds to a model's rule: an app's cached read over ``User``
  and the library's ``users.get_by_username`` are both invalidated.
* Rows PostgreSQL deletes through ON DELETE CASCADE (a user's API keys) drop
  the cached reads of those rows, for ORM and Core deletes.
* The listeners run only in alpha_data's session class: a host application's
  plain Session in the same process records nothing.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, delete, event, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from alpha_data import Database, Settings
from alpha_data.cache import CacheScope, TagSpec, cached, invalidated_by
from alpha_data.cache.cascade import cascade_tags
from alpha_data.cache.invalidation import SCOPE_KEY, _record_flush
from alpha_data.cache.tags import row_rule
from alpha_data.models import ApiKey, Role, User
from alpha_data.repositories import Repository
from alpha_data.repositories.users import USER_EMAIL, USER_ID, USER_NAME
from alpha_data.testing.factories import ApiKeyFactory, UserFactory
from alpha_data.uow import DataSession

# -- an application's cached reads over the library's models -------------------------

KEYS_OF_USER = TagSpec("app_keys", "user_id")
USERS_BY_ROLE = TagSpec("app_users", "role")


class UserKeys(Repository[ApiKey]):
    """An app's cached read of a user's API key names (ApiKey rows cascade with users)."""

    model = ApiKey

    @cached(KEYS_OF_USER, many=True)
    async def of_user(self, user_id: int, *, cached: bool = True) -> list[ApiKey]:
        stmt = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)
        return list((await self._execute(stmt)).scalars())


class UsersByRole(Repository[User]):
    """An app's cached read of users by role."""

    model = User

    @cached(USERS_BY_ROLE, many=True)
    async def with_role(self, role: Role, *, cached: bool = True) -> list[User]:
        stmt = select(User).where(User.role == role).order_by(User.id)
        return list((await self._execute(stmt)).scalars())


# What an app declares at import time; the library registers its own rules later,
# when a Database is built: the order must not matter.
invalidated_by(ApiKey, KEYS_OF_USER.of("user_id"))
invalidated_by(User, USERS_BY_ROLE)


async def key_names(db: Database, user_id: int) -> list[str]:
    async with db.unit_of_work(read_only=True) as uow:
        return [k.name for k in await uow.repository(UserKeys).of_user(user_id)]


async def user_with_keys(db: Database, *names: str) -> int:
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build())
        for name in names:
            await uow.api_keys.add(ApiKeyFactory.build(user_id=user.id, name=name))
        await uow.commit()
    return user.id


async def cached_key_names(db: Database, user_id: int, expected: list[str]) -> None:
    """Read twice: the second read is a cache hit with the same answer."""
    assert await key_names(db, user_id) == expected
    await db.cache.drain()
    hits = db.cache.hits
    assert await key_names(db, user_id) == expected
    assert db.cache.hits == hits + 1


# -- composition -------------------------------------------------------------------------


def test_rules_compose_and_registering_again_keeps_them(settings: Settings) -> None:
    Database(settings)  # registers the library's rules (again)
    specs = row_rule(User).specs  # type: ignore[union-attr]
    assert set(specs) == {USER_ID, USER_NAME, USER_EMAIL, USERS_BY_ROLE} and len(specs) == 4
    assert row_rule(ApiKey).specs == (KEYS_OF_USER.of("user_id"),)  # type: ignore[union-attr]


async def test_app_rule_for_user_keeps_the_librarys_user_rules(db: Database) -> None:
    async with db.unit_of_work() as uow:
        user = await uow.users.add(UserFactory.build(username="rita", role=Role.TRADER))
        await uow.commit()
    for _ in range(2):  # miss, then hit
        async with db.unit_of_work(read_only=True) as uow:
            assert (await uow.users.get_by_username("rita")) is not None
            assert [u.id for u in await uow.repository(UsersByRole).with_role(Role.TRADER)] == [
                user.id
            ]
        await db.cache.drain()
    assert db.cache.hits >= 2
    async with db.unit_of_work() as uow:  # rename and change role in one ORM write
        loaded = await uow.users.get_one(user.id)
        loaded.role = Role.VIEWER
        loaded.username = "rita2"
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.users.get_by_username("rita") is None  # the library's rule held
        assert await uow.repository(UsersByRole).with_role(Role.TRADER) == []  # the app's too
        viewers = await uow.repository(UsersByRole).with_role(Role.VIEWER)
        assert [u.id for u in viewers] == [user.id]


# -- ON DELETE CASCADE ----------------------------------------------------------------------


async def test_orm_delete_of_a_user_drops_cached_reads_of_its_cascaded_keys(db: Database) -> None:
    uid = await user_with_keys(db, "alpha", "beta")
    other = await user_with_keys(db, "gamma")
    await cached_key_names(db, uid, ["alpha", "beta"])
    await cached_key_names(db, other, ["gamma"])
    async with db.unit_of_work() as uow:
        await uow.users.delete(uid)  # PostgreSQL deletes the keys (passive_deletes)
        await uow.commit()
    assert await key_names(db, uid) == []
    # Only the keys of the deleted user were invalidated (the precise tag, not the epoch).
    hits = db.cache.hits
    assert await key_names(db, other) == ["gamma"]
    assert db.cache.hits == hits + 1


async def test_core_delete_of_users_drops_cached_key_reads(db: Database) -> None:
    uid = await user_with_keys(db, "delta")
    await cached_key_names(db, uid, ["delta"])
    async with db.unit_of_work() as uow:
        await uow.session.execute(delete(User).where(User.id == uid))
        await uow.commit()
    assert await key_names(db, uid) == []


async def test_rollback_of_a_delete_keeps_the_cached_read(db: Database) -> None:
    uid = await user_with_keys(db, "eps")
    await cached_key_names(db, uid, ["eps"])
    async with db.unit_of_work() as uow:
        await uow.users.delete(uid)  # not committed
    await cached_key_names(db, uid, ["eps"])


# -- cascades derived from any metadata (no server) -------------------------------------


class _AppBase(DeclarativeBase):
    pass


class _Owner(_AppBase):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)


class _Box(_AppBase):
    __tablename__ = "boxes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("owners.id", ondelete="SET NULL"))


class _Shelf(_AppBase):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(10))


class _Item(_AppBase):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("shelves.id", ondelete="CASCADE"))


class _Note(_AppBase):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"))  # no action: PG refuses


BOX_OWNER = TagSpec("boxes", "owner_id")
SHELF_OWNER = TagSpec("shelves", "owner_id")
SHELF_ID = TagSpec("shelves", "id")
invalidated_by(_Box, BOX_OWNER)
invalidated_by(_Shelf, SHELF_OWNER)


def test_cascade_tags_follow_the_foreign_keys() -> None:
    tags = set(cascade_tags(_Owner, {"id": (7,)}.get, "delete"))
    # SET NULL: the boxes of owner 7 now have owner NULL (both reads change).
    assert {"boxes:owner_id:7", "boxes:owner_id:~"} <= tags
    # CASCADE: the shelves of owner 7 go, and every item on them (keys unknown: epoch).
    assert "shelves:owner_id:7" in tags and "items:*" in tags
    # No ON DELETE action: PostgreSQL refuses instead of changing notes.
    assert not any(t.startswith("notes:") for t in tags)
    # A rule needing more than the foreign key falls back to the table epoch.
    invalidated_by(_Shelf, SHELF_ID)
    assert "shelves:*" in cascade_tags(_Owner, {"id": (7,)}.get, "delete")
    # Unknown parent keys (a bulk DELETE): epochs.
    assert {"boxes:*", "shelves:*", "items:*"} <= set(
        cascade_tags(_Owner, lambda n: None, "delete")
    )
    assert cascade_tags(_Owner, {"id": (7,)}.get, "update") == []  # no ON UPDATE actions


# -- listeners only on alpha_data's session class ---------------------------------------


async def test_host_applications_plain_session_runs_no_alpha_data_listener(
    db: Database,
) -> None:
    assert not event.contains(Session, "after_flush", _record_flush)
    assert event.contains(DataSession, "after_flush", _record_flush)
    async with db.engine.connect() as conn:
        outer = await conn.begin()
        try:
            for session_class, expect_tags in ((Session, False), (DataSession, True)):
                scope = CacheScope(db.cache)
                session = AsyncSession(
                    bind=conn,
                    sync_session_class=session_class,
                    info={SCOPE_KEY: scope},
                    join_transaction_mode="create_savepoint",
                )
                session.add(UserFactory.build())
                await session.flush()
                await session.execute(update(User).values(last_login=None))
                assert bool(scope.tags) is expect_tags, (session_class, scope.tags)
                await session.close()
        finally:
            await outer.rollback()
