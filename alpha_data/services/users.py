"""User services: sign-up, password login, API keys."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from sqlalchemy.orm.attributes import set_committed_value

from alpha_data import schema_names as names
from alpha_data.errors import (
    AuthenticationError,
    ConflictError,
    DataLayerError,
    InvalidDataError,
    NotFoundError,
)
from alpha_data.models import ApiKey, Role, User
from alpha_data.repositories.base import check_id
from alpha_data.security import (
    MAX_PASSWORD_LENGTH,
    api_key_pepper,
    check_password_policy,
    check_permissions,
    dummy_verify,
    hash_password,
    mint_api_key,
    parse_api_key,
    require,
    should_touch,
    verify_api_key,
    verify_password,
)
from alpha_data.services._common import Input, validate
from alpha_data.validation import check_aware, check_text

if TYPE_CHECKING:
    from alpha_data.database import Database
    from alpha_data.uow import UnitOfWork

__all__ = [
    "authenticate",
    "authenticate_api_key",
    "check_email",
    "check_username",
    "create_user",
    "issue_api_key",
]

log = logging.getLogger("alpha_data.services.users")

_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_RE = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TLD_RE = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")
_MAX_EMAIL = 254

_BAD_LOGIN = "invalid username or password"
_BAD_KEY = "invalid API key"
_KEY_MINT_ATTEMPTS = 3


def check_username(value: Any) -> str:
    """3 to 64 characters: ASCII letters, digits, ``.``, ``_``, ``-``; starts alphanumeric."""
    if not isinstance(value, str):
        raise InvalidDataError("username must be a string")
    if not _USERNAME_RE.fullmatch(value):
        raise InvalidDataError(
            "username must be 3 to 64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_email(value: Any) -> str:
    """A plausible address (RFC 5321 lengths, dot-atom local part, DNS host name).

    Surrounding whitespace is removed; case is kept (uniqueness ignores case).
    """
    if not isinstance(value, str):
        raise InvalidDataError("email must be a string")
    email = value.strip()
    bad = InvalidDataError("email must be a valid address such as name@example.com")
    if not email or len(email) > _MAX_EMAIL or email.count("@") != 1:
        raise bad
    local, domain = email.split("@")
    if not 1 <= len(local) <= 64 or not _LOCAL_RE.fullmatch(local):
        raise bad
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2:
        raise bad
    if not all(_LABEL_RE.fullmatch(label) for label in labels[:-1]):
        raise bad
    if not _TLD_RE.fullmatch(labels[-1]):
        raise bad
    return email


def _role(value: Any) -> Role:
    try:
        return Role(value)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise InvalidDataError(f"role must be one of {allowed}") from None


def _id(what: str) -> BeforeValidator:
    return BeforeValidator(lambda v: check_id(v, what))


class NewUser(Input):
    """Validated input of :func:`create_user` (the password is checked separately)."""

    username: Annotated[str, BeforeValidator(check_username)]
    email: Annotated[str, BeforeValidator(check_email)]
    role: Annotated[Role, BeforeValidator(_role)]


def _future(value: datetime | None) -> datetime | None:
    if value is not None and value <= datetime.now(timezone.utc):
        raise InvalidDataError("expires_at must be in the future")
    return value


class NewApiKey(Input):
    """Validated input of :func:`issue_api_key`."""

    user_id: Annotated[int, _id("user_id")]
    name: Annotated[str, BeforeValidator(lambda v: check_text(v, "name", max_length=100))]
    permissions: Annotated[list[str], BeforeValidator(check_permissions)]
    expires_at: Annotated[
        datetime | None,
        BeforeValidator(lambda v: None if v is None else check_aware(v, "expires_at")),
        AfterValidator(_future),
    ] = None


async def create_user(
    db: Database,
    *,
    username: str,
    email: str,
    password: str,
    role: Role | str = "viewer",
) -> User:
    """Create a user with an argon2id password hash.

    InvalidDataError for a bad username, email, role or a password that fails
    the policy (checked before any SQL); ConflictError when the username or the
    email (in any case) is taken.
    """
    data = validate(NewUser, username=username, email=email, role=role)
    check_password_policy(password, username=data.username)
    password_hash = await hash_password(password)

    async def insert(uow: UnitOfWork) -> User:
        user = User(
            username=data.username,
            email=data.email,
            password_hash=password_hash,
            role=data.role,
        )
        return await uow.users.add(user)

    return await db.run(insert)


async def authenticate(db: Database, *, username: str, password: str) -> User:
    """The user whose password this is; records ``last_login``.

    The hash is read from PostgreSQL (never the cache) and verified in a worker
    thread outside any transaction; a hash made with outdated argon2
    parameters is replaced transparently. Unknown user, wrong password or a
    disabled account raise AuthenticationError (the first two indistinguishably,
    also in timing).
    """
    if not isinstance(username, str) or not isinstance(password, str):
        raise InvalidDataError("username and password must be strings")
    if not username or len(username) > 64 or len(password) > 4 * MAX_PASSWORD_LENGTH:
        await dummy_verify(password[: 4 * MAX_PASSWORD_LENGTH])
        raise AuthenticationError(_BAD_LOGIN)

    async with db.unit_of_work(read_only=True) as uow:
        found = await uow.users.get_for_auth(username)
    if found is None:
        await dummy_verify(password)
        raise AuthenticationError(_BAD_LOGIN)
    stored = found.password_hash
    check = await verify_password(stored, password)
    if not check:
        raise AuthenticationError(_BAD_LOGIN)
    if not found.is_active:
        raise AuthenticationError("this account is disabled")
    new_hash = await hash_password(password) if check.needs_rehash else None

    async def record(uow: UnitOfWork) -> User:
        user = await uow.users.get_for_auth(username)
        if user is None or user.id != found.id or user.password_hash != stored:
            raise AuthenticationError(_BAD_LOGIN)  # changed while we were verifying
        if not user.is_active:
            raise AuthenticationError("this account is disabled")
        if new_hash is not None:
            user.password_hash = new_hash
            log.info("password rehashed with current argon2 parameters", extra={"user": user.id})
        when = await uow.users.record_login(user.id)
        set_committed_value(user, "last_login", when)
        return user

    return await db.run(record)


async def issue_api_key(
    db: Database,
    *,
    user_id: int,
    name: str,
    permissions: list[str],
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Mint a key for a user; returns the stored ApiKey and the raw key (shown once).

    NotFoundError for an unknown user, InvalidDataError for a disabled user or
    bad input (permissions such as ``read``, ``trades:write``, ``trades:*``,
    ``*``; ``expires_at`` timezone-aware and in the future).
    """
    data = validate(
        NewApiKey, user_id=user_id, name=name, permissions=permissions, expires_at=expires_at
    )
    pepper = api_key_pepper(db.settings)

    for attempt in range(1, _KEY_MINT_ATTEMPTS + 1):
        minted = mint_api_key(pepper)

        async def insert(uow: UnitOfWork, minted: Any = minted) -> ApiKey:
            owner = await uow.users.get(data.user_id)
            if owner is None:
                raise NotFoundError(f"User {data.user_id} not found", table="users")
            if not owner.is_active:
                raise InvalidDataError("cannot issue an API key for a disabled user")
            key = ApiKey(
                user_id=data.user_id,
                name=data.name,
                prefix=minted.prefix,
                key_hash=minted.key_hash,
                permissions=list(data.permissions),
                expires_at=data.expires_at,
            )
            return await uow.api_keys.add(key)

        try:
            key = await db.run(insert)
        except ConflictError as exc:
            if exc.constraint == names.API_KEYS_PREFIX_UNIQUE and attempt < _KEY_MINT_ATTEMPTS:
                continue  # 48-bit prefix collision: mint another key
            raise
        except InvalidDataError as exc:
            if exc.constraint == names.API_KEYS_USER_FK:  # the user was deleted meanwhile
                raise NotFoundError(f"User {data.user_id} not found", table="users") from None
            raise
        return key, minted.raw
    raise AssertionError("unreachable")  # pragma: no cover


async def authenticate_api_key(
    db: Database, raw_key: str, *, permission: str | None = None
) -> ApiKey:
    """The ApiKey that ``raw_key`` (``<prefix>.<secret>``) belongs to.

    AuthenticationError for a malformed, unknown, wrong, revoked or expired key
    or a disabled owner; PermissionDeniedError when ``permission`` is given and
    not granted. The lookup runs in a read-only unit of work; ``last_used`` is
    written only when older than the touch interval (best effort).
    """
    prefix, secret = parse_api_key(raw_key)
    if permission is not None and (not isinstance(permission, str) or not permission):
        raise InvalidDataError("permission must be a non-empty string")
    pepper = api_key_pepper(db.settings)
    now = datetime.now(timezone.utc)

    # The key and its owner's state come from PostgreSQL in one query, never from the cache.
    async with db.unit_of_work(read_only=True) as uow:
        found = await uow.api_keys.get_for_authentication(prefix)
        if found is None:
            raise AuthenticationError(_BAD_KEY)
        key, owner_active = found
        check = verify_api_key(key.key_hash, prefix, secret, pepper)
        if not check:
            raise AuthenticationError(_BAD_KEY)
        if key.revoked_at is not None:
            raise AuthenticationError("this API key has been revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationError("this API key has expired")
        if not owner_active:
            raise AuthenticationError("the owner of this API key is disabled")

    if check.upgraded_hash is not None or should_touch(key.last_used, now):
        await _touch(db, key, now, check.upgraded_hash)
    if permission is not None:
        require(key, permission)
    return key


async def _touch(db: Database, key: ApiKey, now: datetime, upgraded_hash: str | None) -> None:
    """Write ``last_used`` (and an upgraded hash); failures are logged, not raised."""
    old_hash = key.key_hash

    async def write(uow: UnitOfWork) -> None:
        if upgraded_hash is not None:
            fresh = await uow.api_keys.get_one(key.id)
            if fresh.key_hash == old_hash:
                fresh.key_hash = upgraded_hash
        await uow.api_keys.touch_last_used(key.id, now)

    try:
        await db.run(write, attempts=1)
    except DataLayerError as exc:
        log.warning("could not record API key use", extra={"key": key.id, "error": exc.message})
        return
    set_committed_value(key, "last_used", now)
    if upgraded_hash is not None:
        set_committed_value(key, "key_hash", upgraded_hash)
