"""security: password policy and argon2id hashing, API keys, permissions, touch throttle."""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr

from alpha_data import security
from alpha_data.errors import AuthenticationError, InvalidDataError, PermissionDeniedError
from alpha_data.security import (
    api_key_pepper,
    check_password_policy,
    check_permissions,
    has_permission,
    hash_api_key,
    hash_password,
    mint_api_key,
    parse_api_key,
    require,
    should_touch,
    use_password_hasher,
    verify_api_key,
    verify_password,
)

OTHER_FAST = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
GOOD = "correct horse battery"


# -- password policy ------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "username", "rule"),
    [
        ("short-pass1", None, "at least 12"),
        ("x" * 257, None, "at most 256"),
        (" " * 20, None, "whitespace"),
        ("twelve chars\x00!", None, "control characters"),
        ("Alice.Trader", "alice.trader", "same as the username"),
        (12345678901234, None, "must be a string"),
        (None, None, "must be a string"),
    ],
)
def test_policy_rejects_without_echoing_the_password(password, username, rule):
    with pytest.raises(InvalidDataError) as info:
        check_password_policy(password, username=username)
    assert rule in info.value.message
    if isinstance(password, str) and password.strip():
        assert password not in str(info.value)


def test_policy_accepts_bounds_and_normalizes():
    assert check_password_policy("a" * 12) == "a" * 12
    assert check_password_policy("b" * 256) == "b" * 256
    # NFKC: the ligature "ﬁ" becomes "fi"
    assert check_password_policy("\ufb01nancial-secret") == "financial-secret"
    assert check_password_policy(GOOD, username="someone-else") == GOOD


# -- hashing ----------------------------------------------------------------------


async def test_hash_and_verify_roundtrip():
    encoded = await hash_password(GOOD)
    assert encoded.startswith("$argon2id$")
    assert GOOD not in encoded
    assert await verify_password(encoded, GOOD)
    assert not await verify_password(encoded, GOOD + "!")
    # a second hash of the same password differs (random salt)
    assert await hash_password(GOOD) != encoded


async def test_verify_is_false_for_garbage_and_huge_input():
    assert not await verify_password("not-a-hash", GOOD)
    assert not await verify_password("", GOOD)
    encoded = await hash_password(GOOD)
    assert not await verify_password(encoded, "x" * 100_000)


async def test_nfkc_equivalent_passwords_verify():
    encoded = await hash_password("\ufb01nancial-secret")
    assert await verify_password(encoded, "financial-secret")


class _ThreadRecordingHasher(PasswordHasher):
    threads: list[int]

    def hash(self, password, *, salt=None):  # type: ignore[override]
        self.threads.append(threading.get_ident())
        return super().hash(password, salt=salt)

    def verify(self, hash, password):  # type: ignore[override]
        self.threads.append(threading.get_ident())
        return super().verify(hash, password)


async def test_hashing_and_verification_run_off_the_event_loop_thread():
    hasher = _ThreadRecordingHasher(time_cost=1, memory_cost=8, parallelism=1)
    hasher.threads = []
    with use_password_hasher(hasher):
        encoded = await hash_password(GOOD)
        await verify_password(encoded, GOOD)
    assert len(hasher.threads) == 2
    assert threading.get_ident() not in hasher.threads


async def test_needs_rehash_when_parameters_change():
    encoded = await hash_password(GOOD)
    assert not (await verify_password(encoded, GOOD)).needs_rehash
    with use_password_hasher(OTHER_FAST):
        check = await verify_password(encoded, GOOD)
        assert check.ok and check.needs_rehash
        assert security.needs_rehash(encoded)
        # a wrong password never asks for a rehash
        assert not (await verify_password(encoded, "wrong password!")).needs_rehash
    assert security.needs_rehash("garbage")


async def test_default_parameters_are_argon2id_rfc9106_low_memory():
    previous = security.set_password_hasher(None)
    try:
        hasher = security.get_password_hasher()
        assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (3, 65536, 4)
        encoded = await hash_password(GOOD)
        assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert await verify_password(encoded, GOOD)
    finally:
        security.set_password_hasher(previous)


async def test_dummy_verify_spends_a_verification():
    await security.dummy_verify(GOOD)
    await security.dummy_verify("")


# -- API keys ---------------------------------------------------------------------

KEY_RE = re.compile(r"ak_[0-9a-f]{12}\.[A-Za-z0-9_-]{43}")


def test_minted_keys_have_the_documented_shape():
    keys = [mint_api_key() for _ in range(50)]
    for key in keys:
        assert KEY_RE.fullmatch(key.raw)
        assert key.raw.startswith(key.prefix + ".")
        assert len(key.prefix) <= 16
        assert key.key_hash.startswith("sha256$") and len(key.key_hash) <= 128
        assert key.raw.split(".")[1] not in key.key_hash
        assert "***" in repr(key) and key.raw not in repr(key)
    assert len({k.prefix for k in keys}) == 50
    assert mint_api_key(b"pepper").key_hash.startswith("hmac-sha256$")


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "ak_0123456789ab",
        "ak_0123456789ab.",
        "ak_0123456789AB." + "a" * 43,
        "ak_0123456789ab." + "a" * 42,
        "ak_0123456789ab." + "a" * 44,
        "xx_0123456789ab." + "a" * 43,
        "ak_0123456789ab." + "a" * 42 + "!",
        "ak_0123456789ab." + "a" * 42 + "\x00",
        "x" * 10_000,
        b"ak_0123456789ab." + b"a" * 43,
    ],
)
def test_malformed_keys_are_authentication_errors(raw):
    with pytest.raises(AuthenticationError, match="invalid API key"):
        parse_api_key(raw)


def test_verify_api_key_with_and_without_pepper():
    key = mint_api_key()
    prefix, secret = parse_api_key(key.raw)
    assert verify_api_key(key.key_hash, prefix, secret, None)
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert not verify_api_key(key.key_hash, prefix, tampered, None)
    other_prefix = "ak_" + ("0" * 12 if prefix != "ak_" + "0" * 12 else "1" * 12)
    assert not verify_api_key(key.key_hash, other_prefix, secret, None)
    assert not verify_api_key("md5$abc", prefix, secret, None)
    assert not verify_api_key(None, prefix, secret, None)  # type: ignore[arg-type]

    peppered = mint_api_key(b"server-pepper")
    prefix, secret = parse_api_key(peppered.raw)
    assert verify_api_key(peppered.key_hash, prefix, secret, b"server-pepper")
    assert not verify_api_key(peppered.key_hash, prefix, secret, b"other-pepper")
    assert not verify_api_key(peppered.key_hash, prefix, secret, None)


def test_unpeppered_hash_is_upgraded_once_a_pepper_exists():
    key = mint_api_key()
    prefix, secret = parse_api_key(key.raw)
    check = verify_api_key(key.key_hash, prefix, secret, b"pepper")
    assert check.ok
    assert check.upgraded_hash == hash_api_key(prefix, secret, b"pepper")
    assert verify_api_key(check.upgraded_hash, prefix, secret, b"pepper").upgraded_hash is None
    assert verify_api_key(key.key_hash, prefix, secret, None).upgraded_hash is None


def test_pepper_is_read_from_settings_if_present():
    assert api_key_pepper(SimpleNamespace()) is None
    assert api_key_pepper(SimpleNamespace(api_key_pepper=None)) is None
    assert api_key_pepper(SimpleNamespace(api_key_pepper="")) is None
    assert api_key_pepper(SimpleNamespace(api_key_pepper="s3cret")) == b"s3cret"
    assert api_key_pepper(SimpleNamespace(api_key_pepper=b"raw")) == b"raw"
    assert api_key_pepper(SimpleNamespace(api_key_pepper=SecretStr("hidden"))) == b"hidden"


# -- permissions ------------------------------------------------------------------


def test_check_permissions():
    assert check_permissions(["read", "trades:write", "read", "*", "trades:*"]) == [
        "read",
        "trades:write",
        "*",
        "trades:*",
    ]
    assert check_permissions(()) == []
    for bad in ("read", ["Read"], ["a b"], [""], ["x" * 65], [1], ["trades:"], None):
        with pytest.raises(InvalidDataError):
            check_permissions(bad)
    with pytest.raises(InvalidDataError, match="at most 32"):
        check_permissions([f"p{i}" for i in range(33)])


def test_has_permission_and_require():
    assert has_permission(["read"], "read")
    assert has_permission(["*"], "trades:write")
    assert has_permission(["trades:*"], "trades:write")
    assert not has_permission(["trades:*"], "tradesx:write")
    assert not has_permission(["read"], "trades:write")
    assert not has_permission([], "read")
    key = SimpleNamespace(permissions=["read"])
    require(key, "read")
    with pytest.raises(PermissionDeniedError, match="trades:write"):
        require(key, "trades:write")
    with pytest.raises(PermissionDeniedError):
        require(SimpleNamespace(permissions=None), "read")
    with pytest.raises(InvalidDataError):
        require(key, "")


def test_should_touch_throttles_per_interval():
    now = datetime.now(timezone.utc)
    assert should_touch(None, now)
    assert not should_touch(now - timedelta(seconds=5), now, 60)
    assert should_touch(now - timedelta(seconds=60), now, 60)
    assert should_touch(now + timedelta(hours=1), now, 60)  # clock went back
    assert not should_touch(datetime.now(timezone.utc))
