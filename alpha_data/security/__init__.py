"""Security of the data layer: passwords, API keys and their permissions.

* :mod:`.passwords`: the policy, argon2id hashing and verification in a
  worker thread, the replaceable hasher (``set_password_hasher``);
* :mod:`.api_keys`: minting ``<prefix>.<secret>`` keys, their keyed hash,
  constant-time verification and the ``last_used`` throttle;
* :mod:`.permissions`: validating granted permissions and checking one.

Every public name is importable from ``alpha_data.security`` as before.
"""

from __future__ import annotations

from alpha_data.security.api_keys import (
    API_KEY_PREFIX,
    API_KEY_TOUCH_INTERVAL,
    KeyCheck,
    MintedKey,
    api_key_pepper,
    hash_api_key,
    mint_api_key,
    parse_api_key,
    should_touch,
    verify_api_key,
)
from alpha_data.security.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PasswordCheck,
    check_password_policy,
    dummy_verify,
    get_password_hasher,
    hash_password,
    needs_rehash,
    set_password_hasher,
    use_password_hasher,
    verify_password,
)
from alpha_data.security.permissions import check_permissions, has_permission, require

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
