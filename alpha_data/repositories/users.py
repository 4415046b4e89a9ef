"""Users and their API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from alpha_data.cache import TagSpec, cached, invalidate, invalidates
from alpha_data.cache.keys import Unkeyable, personal
from alpha_data.errors import InvalidDataError, NotFoundError
from alpha_data.models import ApiKey, User
from alpha_data.repositories.base import Repository, check_id

__all__ = ["USER_EMAIL", "USER_ID", "USER_NAME", "ApiKeyRepository", "UserRepository"]


def _email_key(email: Any) -> str:
    """Emails match by lower(): only ASCII ones are cached (Python and PostgreSQL agree).

    Personal: the key and tag hold a keyed digest, never the address.
    """
    if not isinstance(email, str) or not email.isascii():
        raise Unkeyable("only ASCII emails are cached")
    return personal(email.lower())


# Cached reads of users (rows → tags: alpha_data.repositories.rules).
# Usernames match exactly (no case folding or stripping), so only marking them personal.
USER_ID = TagSpec("users", "id")
USER_NAME = TagSpec("users", "username", normalize=personal)
USER_EMAIL = TagSpec("users", "email", normalize=_email_key)


class UserRepository(Repository[User]):
    """Users: lookups by username and by email (any case)."""

    model = User
    orderable = frozenset({"id", "created_at", "updated_at", "username"})

    @cached(USER_ID)
    async def get(self, id: int, *, cached: bool = True) -> User | None:
        """The user with primary key ``id``, or None.

        Cached: ``password_hash`` is not loaded on the result (reading it
        raises); ``cached=False`` reads PostgreSQL with every column.
        """
        return await super().get(id)

    @cached(USER_NAME)
    async def get_by_username(self, username: str, *, cached: bool = True) -> User | None:
        """The user with exactly this username, or None (cached, like ``get``)."""
        if not isinstance(username, str):
            raise InvalidDataError("username must be a string")
        stmt = select(User).where(User.username == username)
        user: User | None = (await self._execute(stmt)).scalar_one_or_none()
        return user

    @cached(USER_EMAIL)
    async def get_by_email(self, email: str, *, cached: bool = True) -> User | None:
        """The user with this email, compared case-insensitively, or None (cached, like ``get``)."""
        if not isinstance(email, str):
            raise InvalidDataError("email must be a string")
        stmt = select(User).where(func.lower(User.email) == email.lower())
        user: User | None = (await self._execute(stmt)).scalar_one_or_none()
        return user

    async def get_for_auth(self, username: str) -> User | None:
        """The user with this username read from PostgreSQL, never from the cache.

        For authentication: ``password_hash`` is loaded (and refreshed if the
        session already held the user).
        """
        if not isinstance(username, str):
            raise InvalidDataError("username must be a string")
        stmt = (
            select(User).where(User.username == username).execution_options(populate_existing=True)
        )
        user: User | None = (await self._execute(stmt)).scalar_one_or_none()
        return user

    async def record_login(self, user_id: int) -> datetime:
        """Set ``last_login`` to the database's now(); returns it."""
        check_id(user_id, "user_id")
        stmt = invalidates(
            update(User)
            .where(User.id == user_id)
            .values(last_login=func.now())
            .returning(User.last_login, User.username, User.email)
            .execution_options(synchronize_session="fetch"),
            User,
        )
        row = (await self._execute(stmt)).one_or_none()
        if row is None:
            raise NotFoundError(f"User {user_id} not found", table="users")
        invalidate(self.session, User, id=user_id, username=row.username, email=row.email)
        when: datetime = row.last_login
        return when


class ApiKeyRepository(Repository[ApiKey]):
    """API keys: lookup by public prefix, listing per user, revocation."""

    model = ApiKey
    orderable = frozenset({"id", "created_at", "updated_at"})

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        """The key with this public prefix (revoked or not), or None."""
        if not isinstance(prefix, str):
            raise InvalidDataError("prefix must be a string")
        stmt = select(ApiKey).where(ApiKey.prefix == prefix)
        key: ApiKey | None = (await self._execute(stmt)).scalar_one_or_none()
        return key

    async def get_for_authentication(self, prefix: str) -> tuple[ApiKey, bool] | None:
        """The key with this prefix and whether its owner is active, in one indexed query.

        Never cached: authentication must not rest on an entry whose
        invalidation could be late (docs/caching.md).
        """
        if not isinstance(prefix, str):
            raise InvalidDataError("prefix must be a string")
        stmt = (
            select(ApiKey, User.is_active)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.prefix == prefix)
        )
        row = (await self._execute(stmt)).one_or_none()
        return None if row is None else (row[0], bool(row[1]))

    async def list_for_user(self, user_id: int, *, include_revoked: bool = False) -> list[ApiKey]:
        """Keys of a user, oldest first (revoked ones only when asked)."""
        check_id(user_id, "user_id")
        stmt = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        return list((await self._execute(stmt)).scalars().all())

    async def revoke(self, key_id: int) -> ApiKey:
        """Mark a key revoked now (idempotent: the first revocation time stays)."""
        key = await self.get_one(key_id)
        if key.revoked_at is None:
            stmt = invalidates(
                update(ApiKey)
                .where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=func.now())
                .returning(ApiKey.revoked_at)
                .execution_options(synchronize_session=False),
                ApiKey,
                id=key.id,
            )
            revoked_at = (await self._execute(stmt)).scalar_one_or_none()
            if revoked_at is not None:
                key.revoked_at = revoked_at
                self.session.expire(key, ["updated_at"])
                await self.session.refresh(key, ["updated_at"])
        return key

    async def touch_last_used(self, key_id: int, at: datetime | None = None) -> None:
        """Record use of a key; a single UPDATE, no ORM round trip."""
        check_id(key_id, "key_id")
        stmt = invalidates(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(last_used=at if at is not None else func.now())
            .execution_options(synchronize_session=False),
            ApiKey,
            id=key_id,
        )
        await self._execute(stmt)
