"""Passwords: the policy, argon2id hashing and verification (off the event loop).

argon2id through argon2-cffi's :class:`~argon2.PasswordHasher` (default
parameters: RFC 9106 "low memory" profile, t=3, m=64 MiB, p=4). Hashing and
verification run in a worker thread (``asyncio.to_thread``) so the event
loop never waits for the hash. Passwords are NFKC-normalised before hashing
and verifying, so the same visible password always verifies. A hash made
with other parameters than the current hasher's is reported as
``needs_rehash`` and replaced at the next successful login.

Policy (:func:`check_password_policy`), checked before hashing: 12 to 256
characters (after NFKC), not only whitespace, no NUL or other control
characters, and not equal to the username (ignoring case). No composition
rules (NIST SP 800-63B). Error messages never contain the password.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from alpha_data.errors import InvalidDataError

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "PasswordCheck",
    "check_password_policy",
    "dummy_verify",
    "get_password_hasher",
    "hash_password",
    "needs_rehash",
    "set_password_hasher",
    "use_password_hasher",
    "verify_password",
]

#: Password length bounds, in characters after NFKC normalisation.
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256

_hasher_lock = threading.Lock()
_hasher: PasswordHasher = PasswordHasher()
_dummy_hashes: dict[tuple[int, int, int, int, int], str] = {}


def get_password_hasher() -> PasswordHasher:
    """The argon2id hasher in use (argon2-cffi defaults unless replaced)."""
    return _hasher


def set_password_hasher(hasher: PasswordHasher | None) -> PasswordHasher:
    """Use ``hasher`` from now on (None restores the defaults); returns the previous one.

    Meant for start-up configuration and for tests that need fast parameters.
    """
    global _hasher
    with _hasher_lock:
        previous = _hasher
        _hasher = hasher if hasher is not None else PasswordHasher()
    return previous


@contextmanager
def use_password_hasher(hasher: PasswordHasher) -> Iterator[PasswordHasher]:
    """Temporarily use ``hasher`` (restores the previous one on exit)."""
    previous = set_password_hasher(hasher)
    try:
        yield hasher
    finally:
        set_password_hasher(previous)


def _normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def check_password_policy(password: Any, *, username: str | None = None) -> str:
    """Return the normalised password if it meets the policy; InvalidDataError otherwise.

    Messages describe the rule that failed, never the password.
    """
    if not isinstance(password, str):
        raise InvalidDataError("password must be a string")
    normalized = _normalize(password)
    if len(normalized) < MIN_PASSWORD_LENGTH:
        raise InvalidDataError(f"password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(normalized) > MAX_PASSWORD_LENGTH:
        raise InvalidDataError(f"password must be at most {MAX_PASSWORD_LENGTH} characters long")
    if not normalized.strip():
        raise InvalidDataError("password must not be only whitespace")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in normalized):
        raise InvalidDataError("password must not contain control characters or lone surrogates")
    if username is not None and normalized.casefold() == _normalize(username).casefold():
        raise InvalidDataError("password must not be the same as the username")
    return normalized


async def hash_password(password: str) -> str:
    """argon2id hash of ``password`` (computed in a worker thread).

    The policy is not checked here; call :func:`check_password_policy` first.
    """
    if not isinstance(password, str):
        raise InvalidDataError("password must be a string")
    hasher = _hasher
    return await asyncio.to_thread(hasher.hash, _normalize(password))


@dataclass(frozen=True)
class PasswordCheck:
    """Outcome of :func:`verify_password`; ``needs_rehash`` only when ``ok``."""

    ok: bool
    needs_rehash: bool = False

    def __bool__(self) -> bool:
        return self.ok


def _verify_sync(hasher: PasswordHasher, encoded: str, password: str) -> PasswordCheck:
    try:
        hasher.verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return PasswordCheck(ok=False)
    except UnicodeEncodeError:  # a lone surrogate: no stored password can match it
        return PasswordCheck(ok=False)
    return PasswordCheck(ok=True, needs_rehash=hasher.check_needs_rehash(encoded))


async def verify_password(encoded: str, password: str) -> PasswordCheck:
    """Check ``password`` against an argon2 hash in a worker thread.

    Never raises for a wrong password or a malformed hash: the result is falsy.
    """
    if not isinstance(encoded, str) or not isinstance(password, str):
        return PasswordCheck(ok=False)
    if len(password) > 4 * MAX_PASSWORD_LENGTH:  # bound the work an attacker can ask for
        return PasswordCheck(ok=False)
    hasher = _hasher
    return await asyncio.to_thread(_verify_sync, hasher, encoded, _normalize(password))


def needs_rehash(encoded: str) -> bool:
    """True when ``encoded`` was made with other parameters than the current hasher's."""
    try:
        return _hasher.check_needs_rehash(encoded)
    except (InvalidHashError, ValueError):
        return True


def _params_key(hasher: PasswordHasher) -> tuple[int, int, int, int, int]:
    return (
        hasher.time_cost,
        hasher.memory_cost,
        hasher.parallelism,
        hasher.hash_len,
        hasher.salt_len,
    )


async def dummy_verify(password: str) -> None:
    """Spend the time of one verification (for unknown users: no timing oracle)."""
    hasher = _hasher
    key = _params_key(hasher)
    encoded = _dummy_hashes.get(key)
    if encoded is None:
        encoded = await asyncio.to_thread(hasher.hash, secrets.token_urlsafe(16))
        _dummy_hashes[key] = encoded
    await verify_password(encoded, password if isinstance(password, str) else "")
