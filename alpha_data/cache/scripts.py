"""The cache's two Lua scripts on Redis (store, invalidate) and the arguments each takes.

The rules they apply are in ``alpha_data.cache.backends`` (module docstring);
``MemoryBackend`` applies the same rules in Python, and
tests/test_cache_replica.py checks the two agree step by step. A script is
sent by SHA, and in full when Redis has forgotten it (NOSCRIPT, after a
restart).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from alpha_data.cache.backends import Store, lsn_text, new_nonce

__all__ = ["INVALIDATE", "STORE", "Script", "invalidate_args", "ms", "store_args"]

#: ``execute_command`` of a redis-py client.
Command = Callable[..., Awaitable[Any]]


class Script:
    """A Lua script and its SHA."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def run(self, command: Command, *args: Any) -> Any:
        """EVALSHA; EVAL with the source when Redis answers NOSCRIPT."""
        try:
            return await command("EVALSHA", self.sha, *args)
        except NoScriptError:
            return await command("EVAL", self.source, *args)


def ms(seconds: float) -> int:
    """Seconds as the whole milliseconds Redis takes (at least 1)."""
    return max(1, int(seconds * 1000))


# An LSN as lsn_text writes it (16 hex digits), else false. LSNs are compared
# as strings: equal-length lowercase hex orders like the numbers (in the C
# collation and the usual UTF-8 ones Redis may run with).
_LSN_OF = """
local function lsn_of(v)
  if v and string.len(v) == 16 and not string.find(v, '[^0-9a-f]') then return v end
  return false
end
"""


# KEYS: entry, tags..., fence. ARGV: entry TTL, tag TTL, body, replica LSN ('':
# read on the primary), then the seen tokens and the fresh ones. Under a
# replica LSN every tag must be covered: by its token's LSN, else by the
# trusted fence ('<lsn>/<nonce>' is not trusted yet). Returns 1 stored, 0 a
# tag moved, 2 the replica is behind, 3 no trusted fence (backends.STORED...).
STORE = Script(
    _LSN_OF
    + """
local n = #KEYS - 2
local replica = ARGV[4]
local fence = nil
local function uncovered(t)
  local at = string.find(t, '@', 1, true)
  local bound = at and lsn_of(string.sub(t, at + 1))
  if not bound then
    if fence == nil then fence = lsn_of(redis.call('GET', KEYS[n + 2])) end
    if not fence then return 3 end
    bound = fence
  end
  if bound <= replica then return false end
  return 2
end
local cur = {}
for i = 1, n do
  local t = redis.call('GET', KEYS[i + 1])
  local seen = ARGV[4 + i]
  local fresh = not t
  if fresh then
    if seen ~= '' then return 0 end
    t = ARGV[4 + n + i]
  elseif t ~= seen and not (seen == '' and string.sub(t, 1, 1) == 'i') then
    return 0
  end
  local refused = replica ~= '' and uncovered(t)
  if refused then return refused end
  if fresh then
    redis.call('SET', KEYS[i + 1], t, 'PX', ARGV[2])
  else
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[2])
  end
  cur[i] = t
end
redis.call('SET', KEYS[1], '["' .. table.concat(cur, ',') .. '",' .. ARGV[3], 'PX', ARGV[1])
return 1
"""
)

# KEYS: fence, tags..., entity keys to delete. ARGV: tag TTL, LSN ('': unknown),
# a nonce for a new fence, the nonce to confirm ('': none), the fresh tokens.
# Without an LSN the fence is deleted and the tokens carry none. With one, the
# fence rises to it (a missing one is created as '<lsn>/<nonce>', trusted once
# an invalidation confirms that nonce) and each token carries the highest LSN
# its tag has known: its old token's and this one, or else the trusted fence.
# With no tags or keys (a fence refresh) a trusted fence is left as it is.
# Returns the nonce of an untrusted fence ('' otherwise).
INVALIDATE = Script(
    _LSN_OF
    + """
local n = #ARGV - 4
local lsn = ARGV[2]
local trusted = false
local pending = ''
if lsn == '' then
  redis.call('DEL', KEYS[1])
else
  local f = redis.call('GET', KEYS[1])
  local top, nonce = false, ''
  if f then
    local slash = string.find(f, '/', 1, true)
    if slash then
      nonce = string.sub(f, slash + 1)
      if nonce ~= '' then top = lsn_of(string.sub(f, 1, slash - 1)) end
    else
      top = lsn_of(f)
    end
  end
  if not top then
    top, nonce = lsn, ARGV[3]
  elseif top < lsn and (nonce ~= '' or #KEYS > 1) then
    top = lsn
  end
  if nonce == '' or nonce == ARGV[4] then
    redis.call('SET', KEYS[1], top)
    trusted = top
  else
    redis.call('SET', KEYS[1], top .. '/' .. nonce)
    pending = nonce
  end
end
for i = 1, n do
  local token = ARGV[4 + i]
  if lsn ~= '' then
    local bound = trusted
    local old = redis.call('GET', KEYS[1 + i])
    local at = old and string.find(old, '@', 1, true)
    local known = at and lsn_of(string.sub(old, at + 1))
    if known then
      bound = known
      if bound < lsn then bound = lsn end
    end
    if bound then token = token .. '@' .. bound end
  end
  redis.call('SET', KEYS[1 + i], token, 'PX', ARGV[1])
end
for i = n + 2, #KEYS do redis.call('DEL', KEYS[i]) end
return pending
"""
)


def store_args(s: Store) -> tuple[Any, ...]:
    """numkeys, KEYS and ARGV of STORE for one entry."""
    return (
        2 + len(s.tags),
        s.key,
        *s.tags,
        s.fence,
        ms(s.ttl),
        ms(s.tag_ttl),
        s.body,
        "" if s.replica_lsn is None else lsn_text(s.replica_lsn),
        *s.seen,
        *s.fresh,
    )


def invalidate_args(
    keys: Sequence[str],
    tags: Sequence[str],
    fresh: Sequence[str],
    tag_ttl: float,
    *,
    fence: str,
    lsn: int | None,
    confirm: str,
) -> tuple[Any, ...]:
    """numkeys, KEYS and ARGV of INVALIDATE (a fresh nonce for a fence it creates)."""
    return (
        1 + len(tags) + len(keys),
        fence,
        *tags,
        *keys,
        ms(tag_ttl),
        "" if lsn is None else lsn_text(lsn),
        new_nonce(),
        confirm,
        *fresh,
    )
