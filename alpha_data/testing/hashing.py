"""A fast argon2id hasher for tests: the suite tests behaviour, not the hash's cost."""

from __future__ import annotations

from argon2 import PasswordHasher

__all__ = ["FAST_HASHER"]

#: argon2id with the smallest parameters argon2 accepts (t=1, 8 KiB, p=1).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
