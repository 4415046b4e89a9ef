"""Permissions of API keys: validating the granted list and checking one permission.

A permission is ``name`` or ``scope:name`` (``a-z``, ``0-9``, ``_``, ``.``,
``-``); ``scope:*`` grants everything under ``scope``, ``*`` grants all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from alpha_data.errors import InvalidDataError, PermissionDeniedError

__all__ = ["check_permissions", "has_permission", "require"]

_PERMISSION_RE = re.compile(r"[a-z0-9_.\-]+(:[a-z0-9_.\-*]+)*|\*")
_MAX_PERMISSIONS = 32
_MAX_PERMISSION_LENGTH = 64


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
