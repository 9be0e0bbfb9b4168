"""The Redis provider: one hash per session, every operation one Lua script (one round trip).

Layout: key ``<name>:<HMAC of the id>``, a hash with fields

* ``v`` — version, 16 hex characters, new on every write (the compare-and-set token);
* ``e`` — absolute deadline, unix milliseconds;
* ``i`` — inactivity limit in milliseconds, ``0`` for none (remember-me);
* ``d`` — the AEAD blob.

A regenerated session's old key holds a tombstone instead: a hash with only ``m`` (``1``), for
``TOMBSTONE_MS`` at most. Every script reads a hash without ``v`` as no session (so it never
loads and no save brings it back); ``LOAD`` and ``SLIDE`` report it as "moved" (see ``_provider``).

The key's TTL is always ``min(e - now, i)`` (``e - now`` when ``i`` is 0), set at creation and
refreshed by every load and save inside the same script, so Redis itself forgets expired and
idle sessions. ``now`` is the server's ``TIME``, read inside each script: every app host then
decides deadlines by the same clock, however far its own clock is off. (Redis 7 and Valkey
replicate a script's effects, not the script, so reading ``TIME`` before writing is allowed and
replicas apply the same writes.) The app's clock only stamps a new session; ``CREATE`` refuses
a stamp that disagrees with ``TIME`` and returns ``TIME``, from which the provider learns the
offset between the two clocks and stamps again.

A load looks up every key name the id may have (the current secret's, then each previous
secret's during a rotation) in one script, so it is atomic against a save that moves a session
from an old name to the new one. Every key a script touches is in ``KEYS``.

A key holding another Redis type is not a session: loads skip it and log a warning (without the
key), saves raise ``SessionConflict`` saying so; it is never overwritten.

Every write script treats "the new version is already stored" as success: the connection
manager may resend a command whose connection broke after the server ran it, and that retry
must not turn a save that happened into a conflict. When someone else changed the session
between the first try and the resend, the resend cannot tell whether the first try applied:
then the caller gets :class:`~redis_session.ConnectionLost` (outcome unknown), never a
conflict, which would invite it to apply its change a second time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.abc

from ._connections import ConnectionManager
from ._errors import CommandError, ConnectionLost, SessionConflict
from ._provider import (
    CLOCK,
    CLOCK_AHEAD_MS,
    CLOCK_BEHIND_MS,
    CREATED,
    LIMIT,
    MOVED,
    TAKEN,
    TOMBSTONE_MS,
    Found,
    Listed,
    Login,
    Record,
    wall_clock_ms,
)
from ._scripts import Script
from ._statistics import PoolStatistics

__all__ = [
    "CREATE",
    "FENCE",
    "LIST",
    "LOAD",
    "LOGIN",
    "READ",
    "REGENERATE",
    "REGENERATE_OWNED",
    "REVOKE",
    "REVOKE_ALL",
    "SAVE",
    "SLIDE",
    "UNPLACE",
    "RedisProvider",
]

logger = logging.getLogger("redis_session")

A = TypeVar("A")
B = TypeVar("B")

# Shared by every script. clock() is the server's TIME in milliseconds. ttl_of applies the TTL
# rule (e - now, capped by i when i > 0) to the stored strings. e and i are clear text that a
# writer to Redis can edit, so it returns nil (unreadable: leave the record alone) unless both
# are whole numbers, i is in 0..2^50 and e, unless already past, is below 2^50 ms (some 35,000
# years; every figure stays an exact integer in Lua's doubles). NaN, 1.5 or 1e18 must not reach
# PEXPIRE, which would fail. expire() formats the TTL with %d because Redis may turn a Lua
# number into text with an exponent, which PEXPIRE refuses. type_of names what a key that is not
# a hash holds, for the caller's message.
_COMMON = """
local LIMIT = 2 ^ 50
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ttl_of(e, i, now)
  e, i = tonumber(e), tonumber(i)
  if not (e and i) or e ~= math.floor(e) or i ~= math.floor(i) then return nil end
  if i < 0 or i >= LIMIT then return nil end
  local ttl = e - now
  if ttl <= 0 then return ttl end
  if e >= LIMIT then return nil end
  if i > 0 and i < ttl then ttl = i end
  return ttl
end
local function expire(key, ttl)
  redis.call('PEXPIRE', key, string.format('%d', ttl))
end
local function type_of(key)
  return redis.call('TYPE', key)['ok']
end
-- Every login writes nb (0 until a revoke_user) into the user's base key, which outlives
-- every session it marks: no nb means the key was evicted or deleted, and with it the marks of
-- any revocation, so the session is treated as revoked (fail closed).
local function revoked(u, l)
  local nb = tonumber(redis.pcall('HGET', u, 'nb'))
  if not nb then return true end
  local n = tonumber(l)
  return (not n) or n <= nb
end
"""

#: KEYS: key. ARGV: v, e, i, d, created (the app's stamp, unix ms), how far created may be
#: ahead of TIME, how far behind (ms). 1 = created (or this very create already applied),
#: 0 = the key is taken (or e and i are not integers), {TIME} = created disagrees with the
#: server's clock, or the session would be born expired: nothing written.
CREATE = Script(
    _COMMON
    + """
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  if redis.pcall('HGET', key, 'v') == ARGV[1] then return 1 end
  return 0
end
local now = clock()
local created = tonumber(ARGV[5])
if not created or created > now + tonumber(ARGV[6]) or created < now - tonumber(ARGV[7]) then
  return {now}
end
local ttl = ttl_of(ARGV[2], ARGV[3], now)
if not ttl then return 0 end
-- Born expired (a slow clock within the allowance, or a stall before sending): storing
-- nothing and reporting success would hand out a session that never loads. Stamp again.
if ttl <= 0 then return {now} end
redis.call('HSET', key, 'v', ARGV[1], 'e', ARGV[2], 'i', ARGV[3], 'd', ARGV[4])
expire(key, ttl)
return 1
"""
)

#: The lookup LOAD and SLIDE share: the first key holding a live record (deleting those whose
#: deadline passed on the way, and sessions of users that were revoked), sliding its TTL.
#: Returns the HMGET reply, the key's index and, for a session of a user (``fields[ui]`` is
#: 'u'), its public id; or nil, whether a key holds a tombstone (a hash with m but no v), and
#: the first key holding another type, if any. The last of ``fields`` must be 'm'.
_FIND = """
local function find(fields, ui)
  local now, other, moved = clock(), nil, false
  for n, key in ipairs(KEYS) do
    local r = redis.pcall('HMGET', key, unpack(fields))
    if r.err then
      other = other or key
    elseif not r[1] then
      if r[#fields] then moved = true end
    else
      local ttl = ttl_of(r[2], r[3], now)
      -- Unreadable clock fields: returned as they are (they will not decrypt), not touched.
      if not ttl then return r, n end
      local u = r[ui]
      if ttl > 0 then
        if not u then
          expire(key, ttl)
          return r, n
        end
        -- A session of a user (only these read l and p): dead once its login number is at
        -- or below the user's not-before mark (revoke_user); deleted here, read as no session.
        local lp = redis.call('HMGET', key, 'l', 'p')
        if not revoked(u, lp[1]) then
          redis.call('HSET', key, 'a', now)
          expire(key, ttl)
          return r, n, lp[2]
        end
      end
      redis.call('DEL', key)
    end
  end
  return nil, moved, other
end
"""

#: KEYS: every key name the id may have, current first. Returns {v, e, i, d, index} (1-based
#: index into KEYS) and slides the TTL; nil when no key holds a live record; 0 when none does
#: but a key holds a tombstone (moved); else the type name (a string) when a key holds another
#: type. A hash whose e or i is not an
#: integer is returned unchanged and not touched (the store logs it as unreadable). Neither
#: unreadable hashes nor keys of other types are deleted.
LOAD = Script(
    _COMMON
    + _FIND
    + """
local r, n, other = find({'v', 'e', 'i', 'd', 'u', 'm'}, 5)
if not r then
  if n then return 0 end
  return other and type_of(other)
end
-- {v, e, i, d, index} and, for a session of a user, u and p (r[6], m, is nil in a record).
local u = r[5]
r[5], r[6], r[7] = n, u, other
return r
"""
)

#: KEYS: as LOAD. LOAD's sliding half, for when the read itself goes to a replica: returns
#: {index, v} of the master's live record (nil, 0 or a type name, as LOAD) so the caller can tell
#: whether the replica's copy is current.
SLIDE = Script(
    _COMMON
    + _FIND
    + """
local r, n, other = find({'v', 'e', 'i', 'u', 'm'}, 4)
if not r then
  if n then return 0 end
  return other and type_of(other)
end
return {n, r[1], r[4], other}
"""
)

#: KEYS: as LOAD. The replica's half when the id has several key names (a plain HMGET reads
#: one): {v, e, i, d, index} of the first key holding a hash with a version, or nil. Declared
#: read-only, so replicas run it.
READ = Script(
    """#!lua flags=no-writes
for n, key in ipairs(KEYS) do
  local r = redis.pcall('HMGET', key, 'v', 'e', 'i', 'd')
  if not r.err and r[1] then
    r[5] = n
    return r
  end
end
return nil
"""
)

#: KEYS: key. ARGV: expected v, new v, d, e, i. Writes v and d if the stored version is the
#: expected one and the stored e and i are the ones given (those the blob is bound to), and
#: slides the TTL. 1 = saved (or this very save already applied), 0 = conflict: saved or
#: deleted or regenerated by someone else (a tombstone has no v), expired, or e or i edited
#: behind our back (left as they are); a type name when the key holds another type (left as
#: it is).
SAVE = Script(
    _COMMON
    + """
local key = KEYS[1]
local r = redis.pcall('HMGET', key, 'v', 'e', 'i', 'u')
if r.err then return type_of(key) end
if r[1] == ARGV[2] then return 1 end
if r[1] ~= ARGV[1] or r[2] ~= ARGV[4] or r[3] ~= ARGV[5] then return 0 end
local now = clock()
local ttl = ttl_of(r[2], r[3], now)
if not ttl then return 0 end
if ttl <= 0 or (r[4] and revoked(r[4], redis.call('HGET', key, 'l'))) then
  redis.call('DEL', key)
  return 0
end
if r[4] then
  redis.call('HSET', key, 'v', ARGV[2], 'd', ARGV[3], 'a', now)
else
  redis.call('HSET', key, 'v', ARGV[2], 'd', ARGV[3])
end
expire(key, ttl)
return 1
"""
)

#: KEYS: old key, new key. ARGV: expected v, new v, e, i, d, old e, old i, created, how far
#: created may be ahead of TIME, how far behind (ms), the tombstone's longest life (ms). If
#: the old record is live, at the expected version with the given old e and i (those its blob
#: is bound to; the new record's e and i differ from them when the session switches to or from
#: remember-me), and the new key is free: write the new record, set its TTL, replace the old
#: key by a tombstone (a hash with only m, living as long as the old key had left, at most the
#: last ARGV, or deleted when that is 0: a move that keeps the id); 1. A tombstone at the old
#: key reads as no session (0, or 1 for a retry). ``created`` is empty when
#: the session keeps its clocks; when it switches, it is the app's stamp of the new clocks and
#: is checked as CREATE checks it: {TIME} (nothing changes) when it disagrees with the server's
#: clock or the new record would be born expired, so the caller stamps again. Every check comes
#: before the first write: a refused move leaves the old session as it was. Otherwise 0 and
#: nothing changes (1 if this very move already applied; the old key deleted when it is past
#: its deadline; a type name when the old key holds another type).
REGENERATE = Script(
    _COMMON
    + """
local old, new = KEYS[1], KEYS[2]
local r = redis.pcall('HMGET', old, 'v', 'e', 'i', 'u')
if r.err then return type_of(old) end
if not r[1] then
  if redis.pcall('HGET', new, 'v') == ARGV[2] then return 1 end
  return 0
end
-- A session of a user moves only with REGENERATE_OWNED, which keeps its index right.
if r[1] ~= ARGV[1] or r[2] ~= ARGV[6] or r[3] ~= ARGV[7] or r[4] then return 0 end
if redis.call('EXISTS', new) == 1 then return 0 end
local now = clock()
local old_ttl = ttl_of(r[2], r[3], now)
if not old_ttl then return 0 end
if old_ttl <= 0 then
  redis.call('DEL', old)
  return 0
end
if ARGV[8] ~= '' then
  local created = tonumber(ARGV[8])
  if not created or created > now + tonumber(ARGV[9]) or created < now - tonumber(ARGV[10]) then
    return {now}
  end
end
local ttl = ttl_of(ARGV[3], ARGV[4], now)
if not ttl then return 0 end
-- Keeping its clocks, the new record's TTL is the old one's; a switch stamped too late would
-- be born expired: stamp again rather than trade a live session for a dead one.
if ttl <= 0 then return {now} end
local most = tonumber(ARGV[11])
local left = redis.call('PTTL', old)
if left < 0 or left > most then left = most end
redis.call('DEL', old)
if left > 0 then
  redis.call('HSET', old, 'm', '1')
  expire(old, left)
end
redis.call('HSET', new, 'v', ARGV[2], 'e', ARGV[3], 'i', ARGV[4], 'd', ARGV[5])
expire(new, ttl)
return 1
"""
)

# Shared by the scripts on a user's keys (KEYS: ..., B, B:e). An index entry is
# "<created ms>|<remember 0/1>|<session key>" under the public id, the metadata blob under
# "m:<public id>". entries() walks the index, drops what is no longer a live session of this
# user (gone, expired, revoked, or its key reused: p differs), deleting revoked sessions, and
# returns the rest as {public id, key, created, remember, e, i, a, l}. The session keys it reads
# are not in KEYS: the index names them, and they share B's slot (tag U). keep_index() gives B
# and B:e at least ``life`` ms, so they outlive every session they mark. tomb() replaces a
# regenerated session's key by a tombstone, as REGENERATE does (``most`` 0: deleted).
_USERS = """
local function entries(base, idx, now)
  local all = redis.call('HGETALL', idx)
  local nb = tonumber(redis.call('HGET', base, 'nb'))
  local live = {}
  for k = 1, #all, 2 do
    local pid, val = all[k], all[k + 1]
    if string.sub(pid, 1, 2) ~= 'm:' then
      local ok = false
      local c, rm, sk = string.match(val, '^(%d+)|(%d)|(.+)$')
      if sk then
        local s = redis.pcall('HMGET', sk, 'v', 'e', 'i', 'l', 'p', 'a', 'o')
        if not s.err and s[1] and s[5] == pid then
          local ttl = ttl_of(s[2], s[3], now)
          local l = tonumber(s[4])
          if (not nb) or (not l) or l <= nb then
            redis.call('DEL', sk)
          elseif ttl and ttl > 0 then
            ok = true
            live[#live + 1] = {pid, sk, c, rm, s[2], s[3], s[6] or c, l or 0, s[7]}
          end
        end
      end
      if not ok then redis.call('HDEL', idx, pid, 'm:' .. pid) end
    end
  end
  return live
end
local function keep_index(base, idx, life)
  for _, k in ipairs({base, idx}) do
    local left = redis.call('PTTL', k)
    if left ~= -2 and left < life then redis.call('PEXPIRE', k, string.format('%d', life)) end
  end
end
local function tomb(old, most, n)
  local left = redis.call('PTTL', old)
  if left < 0 or left > most then left = most end
  redis.call('DEL', old)
  if left > 0 then
    redis.call('HSET', old, 'm', '1', 'n', n)
    expire(old, left)
  end
end
"""

#: KEYS: new key, B, B:e[, old key]. ARGV: v, e, i, d, created stamp ('' keeps the record's
#: clocks), how far ahead, how far behind, public id, metadata ('' none), limit (0 none),
#: evict ('1') or deny, entry's created ms, remember ('1'/'0'), old expected v, old e, old i,
#: tombstone's longest life, origin ('' or, for PLACE, the key of the session being logged
#: in: sessions placed from it are not counted or evicted). A login: the new session of the
#: user (with u, l, p, a) and its index entry, after pruning the index and enforcing the
#: limit; with an old key (a user-less session, checked as REGENERATE checks it) that key
#: becomes a tombstone. 1 = done (or this very login already applied), 0 = conflict, -2 = the
#: limit denies it, {TIME} = the stamp disagrees with the server's clock; a type name when the
#: old key is not a hash. Every check precedes the first write.
LOGIN = Script(
    _COMMON
    + _USERS
    + """
local new, base, idx, old = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local r
if old then
  r = redis.pcall('HMGET', old, 'v', 'e', 'i', 'u')
  if r.err then return type_of(old) end
  if not r[1] then
    if redis.pcall('HGET', new, 'v') == ARGV[1] then return 1 end
    return 0
  end
  if r[1] ~= ARGV[14] or r[2] ~= ARGV[15] or r[3] ~= ARGV[16] or r[4] then return 0 end
end
if redis.call('EXISTS', new) == 1 then
  if redis.pcall('HGET', new, 'v') == ARGV[1] then return 1 end
  return 0
end
local now = clock()
if old then
  local old_ttl = ttl_of(r[2], r[3], now)
  if not old_ttl then return 0 end
  if old_ttl <= 0 then
    redis.call('DEL', old)
    return 0
  end
end
if ARGV[5] ~= '' then
  local created = tonumber(ARGV[5])
  if not created or created > now + tonumber(ARGV[6]) or created < now - tonumber(ARGV[7]) then
    return {now}
  end
end
local ttl = ttl_of(ARGV[2], ARGV[3], now)
if not ttl then return 0 end
if ttl <= 0 then
  if ARGV[5] == '' and not old then return 0 end
  return {now}
end
local max = tonumber(ARGV[10])
local live = entries(base, idx, now)
if ARGV[18] ~= '' then
  -- A login across slots placed from the same anonymous session (a double-submitted form)
  -- is this very login, racing itself: at most one of them passes FENCE, so it neither
  -- counts against the limit nor is evicted for it.
  local others = {}
  for _, e in ipairs(live) do
    if e[9] ~= ARGV[18] then others[#others + 1] = e end
  end
  live = others
end
if max > 0 and #live >= max then
  if ARGV[11] ~= '1' then return -2 end
  table.sort(live, function(x, y)
    local cx, cy = tonumber(x[3]), tonumber(y[3])
    if cx ~= cy then return cx < cy end
    return x[8] < y[8]
  end)
  for k = 1, #live - max + 1 do
    redis.call('DEL', live[k][2])
    redis.call('HDEL', idx, live[k][1], 'm:' .. live[k][1])
  end
end
local l = redis.call('HINCRBY', base, 'seq', 1)
redis.call('HSETNX', base, 'nb', 0)
redis.call('HSET', new, 'v', ARGV[1], 'e', ARGV[2], 'i', ARGV[3], 'd', ARGV[4],
  'u', base, 'l', l, 'p', ARGV[8], 'a', now)
if ARGV[18] ~= '' then redis.call('HSET', new, 'o', ARGV[18]) end
expire(new, ttl)
redis.call('HSET', idx, ARGV[8], ARGV[12] .. '|' .. ARGV[13] .. '|' .. new)
if ARGV[9] ~= '' then redis.call('HSET', idx, 'm:' .. ARGV[8], ARGV[9]) end
keep_index(base, idx, tonumber(ARGV[2]) - now)
if old then tomb(old, tonumber(ARGV[17]), ARGV[1]) end
return 1
"""
)

#: KEYS: old key, new key, B, B:e. ARGV: as REGENERATE's eleven, then the public id, metadata
#: ('' keeps it), the entry's created ms, remember ('1'/'0'). REGENERATE for a session of a
#: user: the new key keeps u, l and p; the index entry follows it. 0 (and the old key deleted)
#: when the session was revoked.
REGENERATE_OWNED = Script(
    _COMMON
    + _USERS
    + """
local old, new, base, idx = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local r = redis.pcall('HMGET', old, 'v', 'e', 'i', 'u', 'l', 'p')
if r.err then return type_of(old) end
if not r[1] then
  if redis.pcall('HGET', new, 'v') == ARGV[2] then return 1 end
  return 0
end
if r[1] ~= ARGV[1] or r[2] ~= ARGV[6] or r[3] ~= ARGV[7] then return 0 end
if r[4] ~= base or r[6] ~= ARGV[12] then return 0 end
if revoked(base, r[5]) then
  redis.call('DEL', old)
  return 0
end
if redis.call('EXISTS', new) == 1 then return 0 end
local now = clock()
local old_ttl = ttl_of(r[2], r[3], now)
if not old_ttl then return 0 end
if old_ttl <= 0 then
  redis.call('DEL', old)
  return 0
end
if ARGV[8] ~= '' then
  local created = tonumber(ARGV[8])
  if not created or created > now + tonumber(ARGV[9]) or created < now - tonumber(ARGV[10]) then
    return {now}
  end
end
local ttl = ttl_of(ARGV[3], ARGV[4], now)
if not ttl then return 0 end
if ttl <= 0 then return {now} end
tomb(old, tonumber(ARGV[11]), ARGV[2])
redis.call('HSET', new, 'v', ARGV[2], 'e', ARGV[3], 'i', ARGV[4], 'd', ARGV[5],
  'u', base, 'l', r[5], 'p', r[6], 'a', now)
expire(new, ttl)
redis.call('HSET', idx, r[6], ARGV[14] .. '|' .. ARGV[15] .. '|' .. new)
if ARGV[13] ~= '' then redis.call('HSET', idx, 'm:' .. r[6], ARGV[13]) end
keep_index(base, idx, tonumber(ARGV[3]) - now)
return 1
"""
)

#: KEYS: old key. ARGV: expected v, the placed session's v, old e, old i, tombstone's longest
#: life. The second half of a login across slots: the old (user-less) session, if still at
#: the expected version and clocks, becomes a tombstone naming the new version (a resend
#: finds it: 1). 0 otherwise; a type name when the key is not a hash.
FENCE = Script(
    _COMMON
    + _USERS
    + """
local old = KEYS[1]
local r = redis.pcall('HMGET', old, 'v', 'e', 'i', 'u', 'n')
if r.err then return type_of(old) end
if not r[1] then
  if r[5] == ARGV[2] then return 1 end
  return 0
end
if r[1] ~= ARGV[1] or r[2] ~= ARGV[3] or r[3] ~= ARGV[4] or r[4] then return 0 end
local ttl = ttl_of(r[2], r[3], clock())
if not ttl then return 0 end
if ttl <= 0 then
  redis.call('DEL', old)
  return 0
end
tomb(old, tonumber(ARGV[5]), ARGV[2])
return 1
"""
)

#: KEYS: new key, B, B:e. ARGV: v, public id. Undoes a PLACE whose FENCE failed: deletes the
#: placed session if still at v (compare-and-set), and its index entry.
UNPLACE = Script(
    """
local new, idx = KEYS[1], KEYS[3]
if redis.pcall('HGET', new, 'v') == ARGV[1] then redis.call('DEL', new) end
redis.call('HDEL', idx, ARGV[2], 'm:' .. ARGV[2])
return 1
"""
)

#: KEYS: B, B:e. The live sessions of the user (the index pruned of the rest): a list of
#: {public id, created, remember, e, i, a, metadata or ''}.
LIST = Script(
    _COMMON
    + _USERS
    + """
local base, idx = KEYS[1], KEYS[2]
local out = {}
for _, s in ipairs(entries(base, idx, clock())) do
  local m = redis.call('HGET', idx, 'm:' .. s[1]) or ''
  out[#out + 1] = {s[1], s[3], s[4], s[5], s[6], s[7], m}
end
return out
"""
)

#: KEYS: B, B:e. ARGV: public id. Ends that session: its entry and its key. 1 when a live
#: session was ended, else 0.
REVOKE = Script(
    _COMMON
    + """
local base, idx, pid = KEYS[1], KEYS[2], ARGV[1]
local val = redis.call('HGET', idx, pid)
redis.call('HDEL', idx, pid, 'm:' .. pid)
if not val then return 0 end
local sk = string.match(val, '^%d+|%d|(.+)$')
if not sk then return 0 end
local s = redis.pcall('HMGET', sk, 'v', 'p', 'l')
if s.err or not s[1] or s[2] ~= pid then return 0 end
redis.call('DEL', sk)
if revoked(base, s[3]) then return 0 end
return 1
"""
)

#: KEYS: B, B:e. ARGV: the public id to keep ('' none). Every session of the user logged in so
#: far is dead from now on (nb = seq: constant cost, however many); the index goes. The kept
#: session, if live, gets a new login number above the mark and keeps its entry. 1 if kept.
REVOKE_ALL = Script(
    _COMMON
    + _USERS
    + """
local base, idx, pid = KEYS[1], KEYS[2], ARGV[1]
local seq = redis.call('HGET', base, 'seq')
if not seq then
  redis.call('DEL', idx)
  return 0
end
local nb = tonumber(redis.call('HGET', base, 'nb'))
redis.call('HSET', base, 'nb', seq)
local val, meta, sk, s = false, false, nil, nil
if pid ~= '' then
  val = redis.call('HGET', idx, pid)
  meta = redis.call('HGET', idx, 'm:' .. pid)
  if val then sk = string.match(val, '^%d+|%d|(.+)$') end
  if sk then s = redis.pcall('HMGET', sk, 'v', 'p', 'l') end
end
redis.call('DEL', idx)
if not (s and not s.err and s[1] and s[2] == pid and tonumber(s[3])) then return 0 end
if nb and tonumber(s[3]) <= nb then return 0 end
local l = redis.call('HINCRBY', base, 'seq', 1)
redis.call('HSET', sk, 'l', l)
redis.call('HSET', idx, pid, val)
if meta then redis.call('HSET', idx, 'm:' .. pid, meta) end
keep_index(base, idx, redis.call('PTTL', base))
return 1
"""
)


def _evalsha_template(script: Script, count: int) -> bytes:
    """Return ``EVALSHA <sha> 1`` in RESP, then ``count`` bulk strings to fill in with ``%``.

    Each takes ``(len(value), value)`` for a ``bytes`` value: the command of the hot path
    (LOAD of one key, SAVE) formatted in one step, where ``hiredis.pack_command`` of the same
    arguments (a tuple built per call) takes two to four times as long. The output is the same
    bytes (``tests/test_store.py`` compares the two).
    """
    sha = script.sha.encode()
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$1\r\n1\r\n" % (count + 3, len(sha), sha)
    return head + b"$%d\r\n%s\r\n" * count


#: LOAD of one key name (no rotation): its key.
_LOAD_ONE = _evalsha_template(LOAD, 1)
#: SAVE: key, expected version, new version, blob, deadline, idle limit (the last two as
#: decimal bytes).
_SAVE_PACKED = _evalsha_template(SAVE, 6)

_UNREADABLE = Record(version=b"", deadline_ms=0, inactivity_ms=0, blob=b"")


def _record(reply: Any) -> Record:
    """Turn a ``{v, e, i, d}`` reply into a record; garbage becomes one that cannot decrypt."""
    try:
        version, deadline, inactivity, blob = reply
        return Record(version, int(deadline), int(inactivity), bytes(blob))
    except (TypeError, ValueError):
        return _UNREADABLE


def _entry_args(login: Login) -> tuple[bytes, bytes, int, bytes]:
    return (
        login.public_id,
        login.metadata or b"",
        login.created_ms,
        b"1" if login.remember_me else b"0",
    )


def _outcome_unknown(operation: str) -> ConnectionLost:
    """Return the error for a write resent after a broken connection that found a change.

    The first try may have been applied before someone else changed the session again, so
    "conflict" could be wrong: a caller that retries on conflict would apply its change twice.
    """
    msg = (
        f"the connection broke while a {operation} ran, and the resent {operation} found the "
        "session changed since: the first try may have been applied; reload the session to see"
    )
    return ConnectionLost(msg, sent=True)


def _type_name(reply: bytes) -> str:
    return reply.decode(errors="replace")


def _found(reply: Any) -> Found:
    """Turn a LOAD reply into (index into the keys, record), MOVED, or None (logged)."""
    if type(reply) is list and len(reply) == 6:
        # The usual reply, {v, e, i, d, index, nil} of a session without a user (HMGET's
        # missing u), taken apart in one step; anything unexpected in it is left to
        # _found_slowly, whose answer this is (tests/test_store.py compares the two).
        version, deadline, inactivity, blob, index, _ = reply
        if type(blob) is bytes and type(index) is int:
            try:
                return index - 1, Record(version, int(deadline), int(inactivity), blob)
            except (TypeError, ValueError):
                pass
    return _found_slowly(reply)


def _found_slowly(reply: Any) -> Found:
    """:func:`_found` for every reply."""
    if reply is None:
        return None
    if reply == 0:
        # Exactly 0: any other integer is not a LOAD reply (left to the unreadable case).
        return MOVED
    if isinstance(reply, bytes):
        _warn_other_type(reply)
        return None
    try:
        index = int(reply[4]) - 1
    except (TypeError, ValueError, IndexError):
        return 0, _UNREADABLE
    return index, _owned(_record(reply[:4]), reply[5:7])


def _owned(record: Record, owner: Any) -> Record:
    """Add the user and public id (``u``, ``p``) a reply carries for a session of a user."""
    if not record.version or len(owner) != 2:
        return record
    user, public_id = owner
    if type(user) is not bytes or type(public_id) is not bytes:
        return record
    r = record
    return Record(r.version, r.deadline_ms, r.inactivity_ms, r.blob, user, public_id)


def _warn_other_type(reply: bytes) -> None:
    # Without the key: the warning must not help anyone map key names to sessions.
    logger.warning(
        "ignoring a key that holds a Redis %s where a session's hash should be: not written by "
        "this library (left in place; the session reads as missing)",
        _type_name(reply),
    )


def _other_type_conflict(reply: bytes) -> SessionConflict:
    return SessionConflict(
        f"the session's key holds a Redis {_type_name(reply)}, not a session: something other "
        "than this library wrote it; nothing was written"
    )


class RedisProvider:
    """Sessions in Redis through a :class:`ConnectionManager`."""

    name = "redis"

    def __init__(
        self, manager: ConnectionManager, clock: Callable[[], int] = wall_clock_ms
    ) -> None:
        self._manager = manager
        self.sharded = manager.sharded
        #: The app's clock (unix ms); only new sessions' stamps are taken from it.
        self.clock = clock
        #: The server's clock minus the app's, as last learnt from a refused create.
        self._offset_ms = 0

    @property
    def manager(self) -> ConnectionManager:
        """The connection manager (for statistics and tests)."""
        return self._manager

    def now_ms(self) -> int:
        """Return the server's clock as estimated here: the app's clock plus the known offset."""
        return self.clock() + self._offset_ms

    def deadline(self) -> float:
        """Return the loop time by which an operation started now must end."""
        return self._manager.deadline()

    async def create(
        self, key: bytes, record: Record, created_ms: int, deadline: float | None = None
    ) -> int:
        """Store ``record`` under a new ``key``: ``CREATED``, ``TAKEN`` or ``CLOCK``."""
        manager = self._manager
        if deadline is None:
            deadline = manager.deadline()
        # The script runs before the deadline, so an honest stamp lags TIME by at most this
        # much more (plus the clocks' disagreement).
        in_flight = max(0, int((deadline - asyncio.get_running_loop().time()) * 1000))
        args = (
            record.version,
            record.deadline_ms,
            record.inactivity_ms,
            record.blob,
            created_ms,
            CLOCK_AHEAD_MS,
            in_flight + CLOCK_BEHIND_MS,
        )
        reply = await manager.run_script(CREATE, (key,), args, deadline=deadline)
        if isinstance(reply, list):
            self._learn_clock(int(reply[0]))
            return CLOCK
        return CREATED if reply else TAKEN

    def _learn_clock(self, server_ms: int) -> None:
        # Learnt on arrival of the reply, so the estimate errs early by the reply's travel
        # time: a stamp from it never runs ahead of the server.
        self._offset_ms = server_ms - self.clock()
        logger.info(
            "this host's clock differs from the Redis server's by %+d ms; new sessions are "
            "stamped by the server's clock",
            -self._offset_ms,
        )

    async def load(  # noqa: PLR0911 - one return per kind of reply
        self, keys: Sequence[bytes], deadline: float | None = None
    ) -> Found:
        """Return the first live record among ``keys`` and its index; slides its TTL.

        ``MOVED`` when none holds a record but one holds a tombstone (regenerated moments ago).
        """
        manager = self._manager
        if not manager.routes_reads:
            if len(keys) == 1 and type(key := keys[0]) is bytes:
                # run_script's work, inlined for the usual load (one key name): packed in one
                # step (see _evalsha_template), and one call less.
                packed = _LOAD_ONE % (len(key), key)
                reply = await manager.execute_packed(
                    packed,
                    deadline=deadline,
                    slot=manager.slot_of(key) if self.sharded else 0,
                    fallback=("EVAL", LOAD.source, 1, key),
                )
                return _found(reply)
            return _found(await manager.run_script(LOAD, keys, (), deadline=deadline))
        # The blob comes from a replica while the master slides the TTL, concurrently. The
        # master's version (and key index) says whether the replica's copy is current; when
        # replication lags (a session created or saved a moment ago, or just moved to a new
        # key name), read the master instead. One deadline for the whole load, so the
        # fallback read cannot extend it.
        if deadline is None:
            deadline = manager.deadline()
        reading: Awaitable[Any]
        if len(keys) == 1:
            reading = manager.execute(
                "HMGET",
                keys[0],
                "v",
                "e",
                "i",
                "d",
                read_only=True,
                deadline=deadline,
                slot=manager.slot_of(keys[0]),
            )
        else:
            reading = manager.run_script(READ, keys, (), read_only=True, deadline=deadline)
        read, slid = await _both(
            _replica_copy(reading), manager.run_script(SLIDE, keys, (), deadline=deadline)
        )
        if slid is None:
            return None
        if slid == 0:
            return MOVED
        if isinstance(slid, bytes):
            _warn_other_type(slid)
            return None
        try:
            index, version = int(slid[0]) - 1, slid[1]
        except (TypeError, ValueError, IndexError):
            return 0, _UNREADABLE
        owner = slid[2:4]
        current = (
            isinstance(read, list)
            and len(read) >= 4
            and read[0] == version
            and (len(keys) == 1 or (len(read) == 5 and read[4] == index + 1))
        )
        if not current:
            return _found(await manager.run_script(LOAD, keys, (), deadline=deadline))
        return index, _owned(_record(read[:4]), owner)

    async def save(
        self, key: bytes, expected: bytes, record: Record, deadline: float | None = None
    ) -> bool:
        """Replace the record if its version is still ``expected``; ``False`` otherwise."""
        version, blob = record.version, record.blob
        deadline_ms, inactivity_ms = record.deadline_ms, record.inactivity_ms
        resent: list[bool] = []
        manager = self._manager
        if (
            type(key) is bytes
            and type(expected) is bytes
            and type(version) is bytes
            and type(blob) is bytes
            and type(deadline_ms) is int
            and type(inactivity_ms) is int
        ):
            # run_script's work, inlined (see load).
            e, i = b"%d" % deadline_ms, b"%d" % inactivity_ms
            packed = _SAVE_PACKED % (
                len(key), key, len(expected), expected, len(version), version,
                len(blob), blob, len(e), e, len(i), i,
            )  # fmt: skip
            reply = await manager.execute_packed(
                packed,
                deadline=deadline,
                resent=resent,
                slot=manager.slot_of(key) if self.sharded else 0,
                fallback=("EVAL", SAVE.source, 1, key, expected, version, blob, e, i),
            )
        else:
            args = (expected, version, blob, deadline_ms, inactivity_ms)
            reply = await manager.run_script(SAVE, (key,), args, deadline=deadline, resent=resent)
        if isinstance(reply, bytes):
            raise _other_type_conflict(reply)
        if not reply and resent:
            raise _outcome_unknown("save")
        return bool(reply)

    async def regenerate(
        self,
        old_key: bytes,
        new_key: bytes,
        expected: bytes,
        record: Record,
        deadline: float | None = None,
        *,
        clock: tuple[int, int] | None = None,
        created_ms: int | None = None,
        operation: str = "regenerate",
        tombstone: bool = True,
        login: Login | None = None,
    ) -> int:
        """Move the session to ``new_key`` (writing ``record``); leave a tombstone at ``old_key``.

        ``tombstone=False`` (a move that keeps the id): ``old_key`` is deleted instead.

        ``CREATED``, ``TAKEN`` (a conflict) or, with ``created_ms``, ``CLOCK``.
        """
        manager = self._manager
        if deadline is None:
            deadline = manager.deadline()
        old_deadline, old_inactivity = clock or (record.deadline_ms, record.inactivity_ms)
        stamp: tuple[int | str, int, int] = ("", 0, 0)
        if created_ms is not None:
            in_flight = max(0, int((deadline - asyncio.get_running_loop().time()) * 1000))
            stamp = (created_ms, CLOCK_AHEAD_MS, in_flight + CLOCK_BEHIND_MS)
        args: tuple[Any, ...] = (
            expected,
            record.version,
            record.deadline_ms,
            record.inactivity_ms,
            record.blob,
            old_deadline,
            old_inactivity,
            *stamp,
            TOMBSTONE_MS if tombstone else 0,
        )
        keys: tuple[bytes, ...] = (old_key, new_key)
        script = REGENERATE
        if login is not None:
            script = REGENERATE_OWNED
            keys = (old_key, new_key, login.base, login.entries)
            args = (*args, *_entry_args(login))
        resent: list[bool] = []
        reply = await manager.run_script(script, keys, args, deadline=deadline, resent=resent)
        if isinstance(reply, bytes):
            raise _other_type_conflict(reply)
        if isinstance(reply, list):
            self._learn_clock(int(reply[0]))
            return CLOCK
        if not reply and resent:
            raise _outcome_unknown(operation)
        return CREATED if reply else TAKEN

    async def delete(self, keys: Sequence[bytes], deadline: float | None = None) -> None:
        """Delete ``keys``; missing keys are fine."""
        # Every name of one id shares its slot tag: one slot on a cluster.
        manager = self._manager
        await manager.execute("DEL", *keys, deadline=deadline, slot=manager.slot_of(keys[0]))

    async def login(
        self,
        new_key: bytes,
        record: Record,
        login: Login,
        deadline: float | None = None,
        *,
        old_key: bytes | None = None,
        expected: bytes = b"",
        clock: tuple[int, int] | None = None,
        created_ms: int | None = None,
    ) -> int:
        """Write a session of a user and its index entry (see the protocol); one script."""
        manager = self._manager
        if deadline is None:
            deadline = manager.deadline()
        stamp: tuple[int | str, int, int] = ("", 0, 0)
        if created_ms is not None:
            in_flight = max(0, int((deadline - asyncio.get_running_loop().time()) * 1000))
            stamp = (created_ms, CLOCK_AHEAD_MS, in_flight + CLOCK_BEHIND_MS)
        old_deadline, old_inactivity = clock or (record.deadline_ms, record.inactivity_ms)
        args = (
            record.version,
            record.deadline_ms,
            record.inactivity_ms,
            record.blob,
            *stamp,
            login.public_id,
            login.metadata or b"",
            login.limit,
            b"1" if login.evict else b"0",
            login.created_ms,
            b"1" if login.remember_me else b"0",
            expected,
            old_deadline,
            old_inactivity,
            TOMBSTONE_MS,
            login.origin or b"",
        )
        keys: tuple[bytes, ...] = (new_key, login.base, login.entries)
        if old_key is not None:
            keys = (*keys, old_key)
        resent: list[bool] = []
        reply = await manager.run_script(LOGIN, keys, args, deadline=deadline, resent=resent)
        if isinstance(reply, bytes):
            raise _other_type_conflict(reply)
        if isinstance(reply, list):
            self._learn_clock(int(reply[0]))
            return CLOCK
        if reply == LIMIT:
            return LIMIT
        if not reply and resent:
            raise _outcome_unknown("login")
        return CREATED if reply else TAKEN

    async def fence(
        self,
        old_key: bytes,
        expected: bytes,
        new_version: bytes,
        clock: tuple[int, int],
        deadline: float | None = None,
    ) -> bool:
        """Tombstone ``old_key`` if still at ``expected`` (FENCE); whether it was."""
        args = (expected, new_version, clock[0], clock[1], TOMBSTONE_MS)
        reply = await self._manager.run_script(FENCE, (old_key,), args, deadline=deadline)
        if isinstance(reply, bytes):
            raise _other_type_conflict(reply)
        return bool(reply)

    async def unplace(
        self, new_key: bytes, version: bytes, login: Login, deadline: float | None = None
    ) -> None:
        """Delete a placed session still at ``version``, and its entry (UNPLACE)."""
        keys = (new_key, login.base, login.entries)
        await self._manager.run_script(UNPLACE, keys, (version, login.public_id), deadline=deadline)

    async def list_sessions(self, base: bytes, deadline: float | None = None) -> list[Listed]:
        """Return the live sessions of the user at ``base`` (LIST)."""
        reply = await self._manager.run_script(LIST, (base, base + b":e"), (), deadline=deadline)
        listed = []
        for row in reply or ():
            pid, created, remember, expires, inactivity, active, meta = row
            listed.append(
                Listed(
                    public_id=bytes(pid),
                    created_ms=int(created),
                    deadline_ms=int(expires),
                    inactivity_ms=int(inactivity),
                    remember_me=remember == b"1",
                    last_active_ms=int(active),
                    metadata=bytes(meta) or None,
                )
            )
        return listed

    async def revoke(self, base: bytes, public_id: bytes, deadline: float | None = None) -> bool:
        """End the session with ``public_id`` (REVOKE)."""
        reply = await self._manager.run_script(
            REVOKE, (base, base + b":e"), (public_id,), deadline=deadline
        )
        return bool(reply)

    async def revoke_all(
        self, base: bytes, keep: bytes | None = None, deadline: float | None = None
    ) -> bool:
        """End every session of the user but ``keep`` (REVOKE_ALL): one script."""
        reply = await self._manager.run_script(
            REVOKE_ALL, (base, base + b":e"), (keep or b"",), deadline=deadline
        )
        return bool(reply)

    def statistics(self) -> PoolStatistics:
        """Return the connection pool figures."""
        return self._manager.statistics()

    def check_caller(self) -> None:
        """Refuse a caller on another live event loop (see the connection manager)."""
        self._manager.check_caller()

    async def aclose(self) -> None:
        """Close the connection manager."""
        await self._manager.aclose()

    def __repr__(self) -> str:
        return f"<RedisProvider {self._manager!r}>"


async def _replica_copy(reading: Awaitable[Any]) -> Any:
    """Return the replica's reply, or None if it answered with an error (the master decides)."""
    try:
        return await reading
    except CommandError:
        # A key of another type, or a replica that cannot run the read: not a copy to use.
        return None


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Await two operations concurrently; if one fails, cancel the other and raise its error.

    A half never raises into the task group: it keeps its error and cancels the group's own
    scope. So the group swallows only its own cancellation, and a cancellation of the caller
    (an anyio scope or asyncio's) leaves exactly as it came, message and count intact; an
    anyio scope recognises its own by that message, and would let any other CancelledError
    through to end the caller's whole task.
    """
    results: list[Any] = [None, None]
    errors: list[Exception] = []

    async def run(index: int, awaitable: Awaitable[Any], group: anyio.abc.TaskGroup) -> None:
        try:
            results[index] = await awaitable
        except Exception as exc:  # noqa: BLE001 - kept and raised by _both, never dropped
            errors.append(exc)
            group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(run, 0, first, group)
        group.start_soon(run, 1, second, group)
    if errors:
        # The first failure is the one worth reporting; the other half was cancelled for it.
        raise errors[0]
    return results[0], results[1]
