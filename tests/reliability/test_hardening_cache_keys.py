"""No personal data in Redis key names: emails and usernames appear only as keyed digests.

Before: ``tag:users:email:<email>`` and ``users:get_by_email:<email>``. The
test scans every key under the test's prefix after cached reads, an update
and a delete, and searches each name for the email, its local part and the
username (any case). Cached lookups must still hit and still be invalidated.
"""

from __future__ import annotations

import redis.asyncio as redis_asyncio

from alpha_data import Database, Settings
from alpha_data.cache.keys import Personal, part
from alpha_data.models import User
from tests.reliability.tools import Tally, unique
from tests.support import REDIS_URL


async def _key_names(prefix: str) -> list[str]:
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        return [k.decode() async for k in client.scan_iter(match=f"{prefix}*", count=500)]
    finally:
        await client.aclose()


def _personal_strings(user: User) -> list[str]:
    local = user.email.split("@")[0]
    return [user.email.lower(), local.lower(), user.username.lower()]


async def test_cached_user_lookups_leave_no_email_or_username_in_key_names(
    db: Database, settings: Settings, tally: Tally
) -> None:
    name = unique("Ana.Personal")
    email = f"{unique('ana.mail')}@Example.io"
    async with db.unit_of_work() as uow:
        user = await uow.users.add(User(username=name, email=email, password_hash="h"))
        await uow.commit()
    for _ in range(2):  # miss (store), then hit
        async with db.unit_of_work(read_only=True) as uow:
            assert (await uow.users.get_by_email(email.upper())).id == user.id
            assert (await uow.users.get_by_username(name)).id == user.id
            assert (await uow.users.get(user.id)).id == user.id
            assert await uow.users.get_by_username(name.lower()) is None  # exact match stays
            assert await uow.users.get_by_email(f"nobody-{email}") is None  # negative entry
        await db.cache.drain()
    assert db.cache.stats().hits >= 4

    new_email = f"{unique('renamed')}@example.io"
    async with db.unit_of_work() as uow:
        loaded = await uow.users.get_one(user.id)
        loaded.email = new_email
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.users.get_by_email(email) is None  # the old entry was invalidated
        assert (await uow.users.get_by_email(new_email)).id == user.id
    await db.cache.drain()

    keys = await _key_names(settings.cache_prefix)
    assert any("get_by_email" in k for k in keys) and any("get_by_username" in k for k in keys)
    forbidden = [*_personal_strings(user), email.lower(), "example.io"]
    for key in keys:
        for value in forbidden:
            assert value not in key.lower(), f"personal data in Redis key {key!r}"
    tally.case("redis key names searched", len(keys))

    async with db.unit_of_work() as uow:
        await uow.users.delete(user.id)
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.users.get_by_username(name) is None
    for key in await _key_names(settings.cache_prefix):
        assert name.lower() not in key.lower() and "example.io" not in key.lower()


def test_personal_parts_are_digests_that_never_meet_plain_parts() -> None:
    assert part(Personal("ana@x.io")) == part(Personal("ana@x.io"))
    assert part(Personal("ana@x.io")) != part(Personal("Ana@x.io"))
    digest = part(Personal("ana@x.io"))
    assert digest.startswith("#p") and "ana" not in digest
    assert part(digest) != digest  # a plain string that looks like a digest is quoted
