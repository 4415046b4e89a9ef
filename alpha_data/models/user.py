"""The user aggregate: User and its ApiKeys."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from sqlalchemy import Boolean, ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from alpha_data.models.base import Base, StrEnum, TimestampedIdMixin, enum_column
from alpha_data.models.json import JsonList

__all__ = ["ApiKey", "Role", "User"]


class Role(StrEnum):
    """What a user may do."""

    ADMIN = "admin"
    TRADER = "trader"
    VIEWER = "viewer"


class User(TimestampedIdMixin, Base):
    """A person or service account; ``password_hash`` is argon2 and never cached."""

    __tablename__ = "users"
    __secret_attributes__: ClassVar[frozenset[str]] = frozenset({"password_hash"})
    __mapper_args__ = {"eager_defaults": True}

    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        enum_column(Role, "role"), default=Role.VIEWER, server_default=Role.VIEWER.value
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    last_login: Mapped[datetime | None] = mapped_column(default=None)

    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="user", lazy="raise_on_sql", passive_deletes=True
    )


class ApiKey(TimestampedIdMixin, Base):
    """An API key: only the public ``prefix`` and a keyed hash of the secret are stored."""

    __tablename__ = "api_keys"
    __secret_attributes__: ClassVar[frozenset[str]] = frozenset({"key_hash"})
    __mapper_args__ = {"eager_defaults": True}

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    permissions: Mapped[list[str]] = mapped_column(
        JsonList, default=list, server_default=text("'[]'::jsonb")
    )
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    user: Mapped[User] = relationship(back_populates="api_keys", lazy="raise_on_sql")


# Emails are unique whatever their case.
Index("uq_users_email_lower", func.lower(User.__table__.c.email), unique=True)
