"""Secrets: API keys refused for the right reason in constant time; no secret in any output.

The session-wide audit (conftest) searches every log line and every Redis
entry of the run for the secrets registered here and in the other modules;
these tests add the reprs, exception messages and cache entries they make.
"""

from __future__ import annotations

import secrets
import statistics
import string
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from pydantic import SecretStr, ValidationError
from sqlalchemy import update

from alpha_data import Database, Settings
from alpha_data.errors import AuthenticationError, InvalidDataError, PermissionDeniedError
from alpha_data.models import ApiKey, User
from alpha_data.security import hash_api_key, mint_api_key, verify_api_key
from alpha_data.services import authenticate, authenticate_api_key, create_user, issue_api_key
from tests.reliability.tools import (
    STORED_FORMS,
    SessionLog,
    Tally,
    hash_digest,
    leaks,
    mask,
    new_password,
    remember_secret,
    unique,
)
from tests.support import REDIS_URL

UTC = timezone.utc
SECRET_ALPHABET = string.ascii_letters + string.digits + "-_"


async def new_user(db: Database, **kw: Any) -> tuple[User, str]:
    password = new_password()
    username = unique("sec").replace("-", "")
    user = await create_user(
        db, username=username, email=f"{username}@example.com", password=password, **kw
    )
    async with db.unit_of_work(read_only=True) as uow:  # the stored hash is a secret too
        stored = await uow.users.get_for_auth(username)
        assert stored is not None
        remember_secret(stored.password_hash, "password_hash")
    return user, password


async def new_key(
    db: Database, user_id: int, permissions: list[str], **kw: Any
) -> tuple[ApiKey, str]:
    key, raw = await issue_api_key(
        db, user_id=user_id, name=unique("k"), permissions=permissions, **kw
    )
    remember_secret(raw, "api_key")
    remember_secret(raw.partition(".")[2], "api_key_secret")
    async with db.unit_of_work(read_only=True) as uow:
        stored = await uow.api_keys.get(key.id)
        assert stored is not None
        remember_secret(hash_digest(stored.key_hash), "key_hash")
    return key, raw


def other_secret(secret: str, *, keep: int) -> str:
    """A well-formed secret sharing exactly ``keep`` leading characters with ``secret``."""
    replacement = next(c for c in SECRET_ALPHABET if c != secret[keep])
    tail = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(len(secret) - keep - 1))
    return secret[:keep] + replacement + tail


async def last_used(db: Database, key_id: int) -> datetime | None:
    async with db.unit_of_work(read_only=True) as uow:
        key = await uow.session.get(ApiKey, key_id, populate_existing=True)
        assert key is not None
        return key.last_used


# -- API keys: refused for the right reason ---------------------------------------------------


async def test_expired_revoked_wrong_and_unpermitted_keys_are_refused(db, tally: Tally):
    owner, _ = await new_user(db, role="trader")
    read_key, read_raw = await new_key(db, owner.id, ["read"])
    scoped, scoped_raw = await new_key(db, owner.id, ["trades:*"])
    _, star_raw = await new_key(db, owner.id, ["*"])
    expiring, expiring_raw = await new_key(
        db, owner.id, ["read"], expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    revoked, revoked_raw = await new_key(db, owner.id, ["read"])
    other, other_raw = await new_key(db, owner.id, ["read"])
    gone_owner, _ = await new_user(db)
    _, orphan_raw = await new_key(db, gone_owner.id, ["read"])

    async with db.unit_of_work() as uow:
        await uow.session.execute(
            update(ApiKey)
            .where(ApiKey.id == expiring.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await uow.api_keys.revoke(revoked.id)
        await uow.session.execute(
            update(User).where(User.id == gone_owner.id).values(is_active=False)
        )
        await uow.commit()

    prefix, secret = read_raw.split(".")
    refused: dict[str, tuple[str, str | None, type[Exception]]] = {
        "expired": (expiring_raw, None, AuthenticationError),
        "revoked": (revoked_raw, None, AuthenticationError),
        "wrong secret, right prefix": (
            f"{prefix}.{other_secret(secret, keep=0)}",
            None,
            AuthenticationError,
        ),
        "last character wrong": (
            f"{prefix}.{other_secret(secret, keep=42)}",
            None,
            AuthenticationError,
        ),
        "another key's secret": (f"{prefix}.{other_raw.split('.')[1]}", None, AuthenticationError),
        "case changed": (f"{prefix}.{secret.swapcase()}", None, AuthenticationError),
        "unknown prefix": (f"ak_{secrets.token_hex(6)}.{secret}", None, AuthenticationError),
        "prefix only": (prefix, None, AuthenticationError),
        "disabled owner": (orphan_raw, None, AuthenticationError),
        "missing permission": (read_raw, "trades:write", PermissionDeniedError),
        "other scope": (scoped_raw, "portfolios:write", PermissionDeniedError),
        "scope itself": (scoped_raw, "trades", PermissionDeniedError),
        "look-alike scope": (scoped_raw, "tradesx:write", PermissionDeniedError),
        "expired, with permission": (expiring_raw, "read", AuthenticationError),
    }
    touched_before = {k.id: await last_used(db, k.id) for k in (expiring, revoked, other)}
    messages = {}
    for label, (raw, permission, error) in refused.items():
        tally.case("refused API key")
        with pytest.raises(error) as info:
            await authenticate_api_key(db, raw, permission=permission)
        assert type(info.value) is error, label
        text_ = f"{info.value!s} {info.value!r}"
        assert not leaks(text_), (label, mask(text_))
        assert raw not in text_ and secret not in text_
        messages[label] = str(info.value)
    # A wrong secret and an unknown prefix are indistinguishable to the caller.
    assert (
        len({messages[k] for k in ("wrong secret, right prefix", "unknown prefix", "prefix only")})
        == 1
    )
    # Refused keys were not touched (nothing written for a refusal).
    for key_id, before in touched_before.items():
        assert await last_used(db, key_id) == before
    tally.rows_verified("api_keys", len(touched_before))

    granted = [
        (read_raw, None),
        (read_raw, "read"),
        (scoped_raw, "trades:write"),
        (scoped_raw, "trades:read"),
        (star_raw, "users:write"),
        (f"  {read_raw}  ", None),  # surrounding whitespace is not part of a key
    ]
    for raw, permission in granted:
        tally.case("accepted API key")
        assert (await authenticate_api_key(db, raw, permission=permission)).user_id == owner.id
    assert await last_used(db, read_key.id) is not None
    assert await last_used(db, scoped.id) is not None


# -- constant time with respect to the secret -------------------------------------------------


def _median_ratio(a: Callable[[], Any], b: Callable[[], Any], *, rounds: int, batch: int) -> float:
    """Median time of ``a`` over median time of ``b``, measured interleaved in batches."""
    times_a: list[int] = []
    times_b: list[int] = []
    for i in range(rounds):
        for fn, out in ((a, times_a), (b, times_b)) if i % 2 else ((b, times_b), (a, times_a)):
            started = time.perf_counter_ns()
            for _ in range(batch):
                fn()
            out.append(time.perf_counter_ns() - started)
    return statistics.median(times_a) / statistics.median(times_b)


@pytest.mark.parametrize("pepper", [None, b"a server-side pepper"], ids=["plain", "peppered"])
def test_verifying_a_wrong_secret_takes_as_long_however_much_of_it_matches(tally: Tally, pepper):
    minted = mint_api_key(pepper)
    remember_secret(minted.raw, "api_key")
    prefix, secret = minted.raw.split(".")
    stored = hash_api_key(prefix, secret, pepper)
    none_match = other_secret(secret, keep=0)
    most_match = other_secret(secret, keep=42)  # all but the last character
    assert not verify_api_key(stored, prefix, none_match, pepper)
    assert not verify_api_key(stored, prefix, most_match, pepper)
    ratio = _median_ratio(
        lambda: verify_api_key(stored, prefix, none_match, pepper),
        lambda: verify_api_key(stored, prefix, most_match, pepper),
        rounds=301,
        batch=20,
    )
    tally.check("timed verification", 301 * 40)
    # Generous on purpose (a loaded 2-core machine): an early-exit compare would show
    # as a ratio far from 1 only on long matches, hashing first makes it ~1.
    assert 0.5 <= ratio <= 2.0, ratio


async def test_refusing_a_wrong_secret_takes_as_long_however_much_of_it_matches(db, tally: Tally):
    owner, _ = await new_user(db)
    _, raw = await new_key(db, owner.id, ["read"])
    prefix, secret = raw.split(".")
    tries = {
        "none": f"{prefix}.{other_secret(secret, keep=0)}",
        "most": f"{prefix}.{other_secret(secret, keep=42)}",
    }
    spent: dict[str, list[int]] = {"none": [], "most": []}
    for i in range(61):
        for label in ("none", "most") if i % 2 else ("most", "none"):
            started = time.perf_counter_ns()
            with pytest.raises(AuthenticationError):
                await authenticate_api_key(db, tries[label])
            spent[label].append(time.perf_counter_ns() - started)
    tally.check("timed refusal", 122)
    ratio = statistics.median(spent["none"]) / statistics.median(spent["most"])
    assert 0.5 <= ratio <= 2.0, ratio


# -- no secret in reprs, messages, cache entries and debug logs -------------------------------


async def test_no_secret_in_reprs_messages_or_cache_entries(db, tally: Tally):
    user, password = await new_user(db, role="trader")
    _, raw = await new_key(db, user.id, ["read"])
    shown: list[str] = []

    async with db.unit_of_work(read_only=True) as uow:
        loaded = await uow.users.get_for_auth(user.username)  # password_hash loaded
        key = await uow.api_keys.get_by_prefix(raw.split(".")[0])  # key_hash loaded
        shown += [repr(loaded), str(loaded), repr(key), str(key)]
    shown.append(repr(mint_api_key()))

    for call in (
        authenticate(db, username=user.username, password=password + "x"),
        authenticate(db, username=user.username + "x", password=password),
        authenticate_api_key(db, raw[:-1] + ("A" if raw[-1] != "A" else "B")),
    ):
        with pytest.raises(AuthenticationError) as info:
            await call
        shown += [str(info.value), repr(info.value)]
    with pytest.raises(InvalidDataError) as invalid:
        await create_user(db, username="samename", email="s@example.com", password="samename")
    shown += [str(invalid.value), repr(invalid.value)]
    with pytest.raises(InvalidDataError) as invalid:
        await create_user(db, username=unique("x"), email="x@example.com", password=password[:5])
    shown += [str(invalid.value), repr(invalid.value)]

    url_password = remember_secret(unique("url-pw-settings"), "url_password")
    pepper = remember_secret(unique("pepper"), "pepper")
    configured = Settings(
        database_url=f"postgresql://postgres:{url_password}@127.0.0.1:1/x",
        redis_url=f"redis://:{url_password}@127.0.0.1:1/0",
        replica_urls=[f"postgresql://postgres:{url_password}@127.0.0.1:1/r"],
        api_key_pepper=SecretStr(pepper),
        _env_file=None,  # type: ignore[call-arg]
    )
    shown += [repr(configured), str(configured), configured.safe_database_url]
    unconnected = Database(configured)
    try:
        shown += [repr(unconnected), repr(await unconnected.health())]
    finally:
        await unconnected.close()
    with pytest.raises(ValidationError) as bad_settings:
        Settings(database_url=f"mysql://root:{url_password}@db/x", _env_file=None)  # type: ignore[call-arg]
    shown.append(str(bad_settings.value))

    # Cached reads of the user: the entries hold no hash, no password, no key.
    async with db.unit_of_work(read_only=True) as uow:
        for _ in range(2):
            await uow.users.get(user.id)
            await uow.users.get_by_username(user.username)
            await uow.users.get_by_email(user.email)
    await db.cache.drain()
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    entries = 0
    try:
        async for k in client.scan_iter(match=f"{db.settings.cache_prefix}:*"):
            value = await client.get(k)
            shown.append(k.decode() + " " + (value or b"").decode("utf-8", "replace"))
            entries += 1
    finally:
        await client.aclose()
    assert entries >= 3

    tally.check("repr/message/cache entry inspected", len(shown))
    found = [f"{leaks(s)}: {mask(s)[:200]}" for s in shown if leaks(s)]
    assert not found, found


async def test_sqlalchemy_debug_row_logs_hold_no_hashes(db, session_log: SessionLog, tally: Tally):
    """With SQLAlchemy at DEBUG its engine echoes result rows: they must not show hashes."""
    start = len(session_log.lines)
    user, password = await new_user(db)
    _, raw = await new_key(db, user.id, ["read"])
    await authenticate(db, username=user.username, password=password)
    await authenticate_api_key(db, raw)
    lines = session_log.lines[start:]
    assert any(name.startswith("sqlalchemy.engine") for name, _, _ in lines)  # captured at all
    tally.check("log lines inspected", len(lines))
    found = [mask(text_)[:200] for _, _, text_ in lines if leaks(text_, kinds=STORED_FORMS)]
    assert not found, found
