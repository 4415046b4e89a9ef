"""API keys: minting, parsing, keyed hashing and constant-time verification.

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

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from alpha_data.errors import AuthenticationError

__all__ = [
    "API_KEY_PREFIX",
    "API_KEY_TOUCH_INTERVAL",
    "KeyCheck",
    "MintedKey",
    "api_key_pepper",
    "hash_api_key",
    "mint_api_key",
    "parse_api_key",
    "should_touch",
    "verify_api_key",
]

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
