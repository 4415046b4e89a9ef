"""Password hashing and API keys.

Passwords
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

API keys
    Minted with :mod:`secrets` and shown once as ``<prefix>.<secret>``, e.g.
    ``ak_3f9c0a1b2c4d.<43 url-safe characters>``: the prefix (``ak_`` + 12 hex
    digits, 48 random bits) is public and stored for lookup; the secret carries
    256 random bits. Only a keyed hash is stored:
    ``hmac-sha256$<hex>`` = HMAC-SHA256(pepper, "<prefix>.<secret>") where the
    pepper is the server-side ``api_key_pepper`` setting when configured, or
    ``sha256$<hex>`` (HMAC under a fixed domain-separation key) without one.
    With 256-bit secrets a fast hash is enough (nothing to brute-force); the
    pepper additionally makes a stolen table useless without the server's
    configuration. Hashes are compared with :func:`hmac.compare_digest`.
    A key stored without pepper is upgraded once a pepper is configured.

    ``last_used`` is written at most once per :data:`API_KEY_TOUCH_INTERVAL`
    seconds per key (see :func:`should_touch`): requests inside the interval
    cause no write at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from alpha_data.errors import AuthenticationError, InvalidDataError, PermissionDeniedError

__all__ = [
    "API_KEY_PREFIX",
    "API_KEY_TOUCH_INTERVAL",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "KeyCheck",
    "MintedKey",
    "PasswordCheck",
    "api_key_pepper",
    "check_password_policy",
    "check_permissions",
    "dummy_verify",
    "get_password_hasher",
    "has_permission",
    "hash_api_key",
    "hash_password",
    "mint_api_key",
    "needs_rehash",
    "parse_api_key",
    "require",
    "set_password_hasher",
    "should_touch",
    "use_password_hasher",
    "verify_api_key",
    "verify_password",
]

#: Password length bounds, in characters after NFKC normalisation.
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256

#: Every minted key starts with this marker (easy to spot in logs and secret scanners).
API_KEY_PREFIX = "ak_"
_PREFIX_HEX_CHARS = 12  # 48 random bits: "ak_" + 12 = 15 chars, fits String(16)
_SECRET_BYTES = 32  # 256 random bits -> 43 url-safe base64 characters
_PREFIX_RE = re.compile(rf"{API_KEY_PREFIX}[0-9a-f]{{{_PREFIX_HEX_CHARS}}}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_RAW_KEY = 128

_PEPPERED = "hmac-sha256"
_UNPEPPERED = "sha256"
_DOMAIN_KEY = b"alpha_data.api_key.v1"

#: Seconds between two writes of ``ApiKey.last_used`` for the same key.
API_KEY_TOUCH_INTERVAL = 60.0

_PERMISSION_RE = re.compile(r"[a-z0-9_.\-]+(:[a-z0-9_.\-*]+)*|\*")
_MAX_PERMISSIONS = 32
_MAX_PERMISSION_LENGTH = 64


# -- passwords --------------------------------------------------------------

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


# -- API keys ---------------------------------------------------------------


@dataclass(frozen=True)
class MintedKey:
    """A freshly minted key: ``raw`` is shown once; store ``prefix`` and ``key_hash``."""

    prefix: str
    raw: str
    key_hash: str

    def __repr__(self) -> str:
        return f"MintedKey(prefix={self.prefix!r}, raw='***', key_hash='***')"


def api_key_pepper(settings: Any) -> bytes | None:
    """The server-side pepper from ``settings.api_key_pepper`` (str, bytes or SecretStr)."""
    value = getattr(settings, "api_key_pepper", None)
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    if callable(getter):
        value = getter()
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes) or not value:
        return None
    return value


def hash_api_key(prefix: str, secret: str, pepper: bytes | None) -> str:
    """The stored form of a key: a tagged HMAC-SHA256 of ``<prefix>.<secret>``."""
    message = f"{prefix}.{secret}".encode("ascii")
    if pepper:
        return f"{_PEPPERED}${hmac.new(pepper, message, hashlib.sha256).hexdigest()}"
    return f"{_UNPEPPERED}${hmac.new(_DOMAIN_KEY, message, hashlib.sha256).hexdigest()}"


def mint_api_key(pepper: bytes | None = None) -> MintedKey:
    """A new random key: public prefix, the raw ``<prefix>.<secret>`` and its stored hash."""
    prefix = API_KEY_PREFIX + secrets.token_hex(_PREFIX_HEX_CHARS // 2)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return MintedKey(
        prefix=prefix, raw=f"{prefix}.{secret}", key_hash=hash_api_key(prefix, secret, pepper)
    )


def parse_api_key(raw: Any) -> tuple[str, str]:
    """Split ``<prefix>.<secret>``; AuthenticationError for anything malformed."""
    if not isinstance(raw, str) or not raw or len(raw) > _MAX_RAW_KEY:
        raise AuthenticationError("invalid API key")
    prefix, dot, secret = raw.strip().partition(".")
    if not dot or not _PREFIX_RE.fullmatch(prefix) or not _SECRET_RE.fullmatch(secret):
        raise AuthenticationError("invalid API key")
    return prefix, secret


@dataclass(frozen=True)
class KeyCheck:
    """Outcome of :func:`verify_api_key`; ``upgraded_hash`` is set when a rehash is due."""

    ok: bool
    upgraded_hash: str | None = None

    def __bool__(self) -> bool:
        return self.ok


def verify_api_key(stored: str, prefix: str, secret: str, pepper: bytes | None) -> KeyCheck:
    """Compare a presented key with the stored hash in constant time.

    A hash stored without pepper still verifies after a pepper was configured,
    and is then reported for upgrade; a peppered hash never verifies without
    the pepper.
    """
    if not isinstance(stored, str):
        return KeyCheck(ok=False)
    scheme, _, _ = stored.partition("$")
    if scheme == _PEPPERED:
        if not pepper:
            return KeyCheck(ok=False)
        expected = hash_api_key(prefix, secret, pepper)
        return KeyCheck(ok=hmac.compare_digest(expected.encode(), stored.encode()))
    if scheme == _UNPEPPERED:
        expected = hash_api_key(prefix, secret, None)
        ok = hmac.compare_digest(expected.encode(), stored.encode())
        upgraded = hash_api_key(prefix, secret, pepper) if ok and pepper else None
        return KeyCheck(ok=ok, upgraded_hash=upgraded)
    return KeyCheck(ok=False)


def check_permissions(permissions: Any) -> list[str]:
    """Validate a list of permission names (``read``, ``trades:write``, ``trades:*``, ``*``).

    Returns them de-duplicated in their original order.
    """
    if isinstance(permissions, (str, bytes, Mapping)) or not isinstance(permissions, Iterable):
        raise InvalidDataError("permissions must be a list of strings")
    out: list[str] = []
    for item in permissions:
        if not isinstance(item, str):
            raise InvalidDataError("permissions must be a list of strings")
        if not 1 <= len(item) <= _MAX_PERMISSION_LENGTH or not _PERMISSION_RE.fullmatch(item):
            raise InvalidDataError(
                "each permission must be 1 to 64 characters of a-z, 0-9, '_', '.', '-', "
                "separated by ':' (e.g. 'trades:write'), or '*'"
            )
        if item not in out:
            out.append(item)
        if len(out) > _MAX_PERMISSIONS:
            raise InvalidDataError(f"at most {_MAX_PERMISSIONS} permissions per key")
    return out


def has_permission(granted: Iterable[str], permission: str) -> bool:
    """True when ``granted`` holds ``permission`` exactly, ``*``, or a ``scope:*`` above it."""
    for item in granted:
        if item in ("*", permission):
            return True
        if item.endswith(":*") and permission.startswith(item[:-1]):
            return True
    return False


def require(api_key: Any, permission: str) -> None:
    """Raise PermissionDeniedError unless ``api_key.permissions`` grants ``permission``."""
    if not isinstance(permission, str) or not permission:
        raise InvalidDataError("permission must be a non-empty string")
    granted = getattr(api_key, "permissions", None) or []
    if not has_permission(granted, permission):
        shown = permission if len(permission) <= 64 else permission[:64] + "…"
        raise PermissionDeniedError(f"this API key lacks the permission {shown!r}")


def should_touch(
    last_used: datetime | None,
    now: datetime | None = None,
    interval: float = API_KEY_TOUCH_INTERVAL,
) -> bool:
    """Whether ``last_used`` is old enough (or unset) to be written again."""
    if last_used is None:
        return True
    current = now if now is not None else datetime.now(timezone.utc)
    elapsed = current - last_used
    # A last_used in the future (clock moved back) is rewritten as well.
    return elapsed >= timedelta(seconds=interval) or elapsed < timedelta(0)
