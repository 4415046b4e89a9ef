"""How a repository reaches its unit of work's session: a handle the unit of work closes.

A repository never keeps the AsyncSession itself. It keeps a ``SessionHandle``
and reads ``handle.session`` on every use; the unit of work closes the handle
when its block ends, after which ``session`` raises ``UnitOfWorkStateError``.
A repository kept past its block therefore holds no session, checks out no
pooled connection and writes nothing, and every method of every subclass
(the library's or an application's) gets that for free: there is no
per-method guard to forget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from alpha_data.errors import UnitOfWorkStateError

if TYPE_CHECKING:
    from alpha_data.cache import Cache

__all__ = ["SessionBound", "SessionHandle"]

_ENDED = (
    "this repository's unit of work has ended: reach repositories inside "
    "'async with db.unit_of_work() as uow:' (uow.users, uow.repository(...)) and do not keep them"
)


class SessionHandle:
    """One unit of work's session as its repositories see it; ``close()`` cuts them off."""

    __slots__ = ("_session",)

    def __init__(self, session: AsyncSession) -> None:
        self._session: AsyncSession | None = session

    @property
    def session(self) -> AsyncSession:
        """The session; UnitOfWorkStateError once the unit of work's block has ended."""
        session = self._session
        if session is None:
            raise UnitOfWorkStateError(_ENDED)
        return session

    @property
    def closed(self) -> bool:
        """True once the unit of work has closed the handle."""
        return self._session is None

    def close(self) -> None:
        """Drop the session: every later ``session`` access raises."""
        self._session = None

    def __repr__(self) -> str:
        return f"SessionHandle({'closed' if self._session is None else 'open'})"


class SessionBound:
    """Base of everything a unit of work builds on its session (``uow.repository(cls)``).

    The constructor is ``(session, *, cache=None, read_only=False)``; the unit
    of work passes its ``SessionHandle``. A bare ``AsyncSession`` is accepted
    for code that owns its session (the repository then lives as long as it).
    Subclasses read ``self.session`` whenever they need it, never store it.
    """

    def __init__(
        self,
        session: SessionHandle | AsyncSession,
        *,
        cache: Cache | None = None,
        read_only: bool = False,
    ) -> None:
        self._handle = session if isinstance(session, SessionHandle) else SessionHandle(session)
        self.cache = cache
        self.read_only = read_only

    @property
    def session(self) -> AsyncSession:
        """The unit of work's session; UnitOfWorkStateError after its block ended."""
        session = self._handle._session  # one lookup on the hot path (same module)
        if session is None:
            raise UnitOfWorkStateError(_ENDED)
        return session
