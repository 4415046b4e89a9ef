"""The Watchlist aggregate: a named list of symbols owned by a user."""

from __future__ import annotations

from alpha_data.models import Base
from alpha_data.models.base import TimestampedIdMixin
from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

__all__ = ["MAX_NAME_LENGTH", "MAX_SYMBOLS", "Watchlist"]

MAX_NAME_LENGTH = 100
MAX_SYMBOLS = 200


class Watchlist(TimestampedIdMixin, Base):
    """A user's watchlist; deleted with its user (ON DELETE CASCADE).

    On the library's ``Base``: one metadata and naming convention, and the
    foreign key to ``users`` resolves. The mixin gives ``id``, ``created_at``
    and ``updated_at`` (kept by the library's trigger, read back after updates).
    """

    __tablename__ = "watchlists"
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        CheckConstraint("length(name) > 0", name="name_not_empty"),
    )

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), nullable=False)
    symbols: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list)
