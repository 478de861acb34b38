"""The Redis lease's Lua scripts (each step of the lease is one of them, in one round trip).

See :mod:`.lock` for how they are used and ``docs/lease.md`` for why epochs are safe.
"""

from __future__ import annotations

from langgraph_resilient._redis.wire import LuaScript

# KEYS[1] is the lease key (value: the holder's token, with a PX expiry). KEYS[2] is the epoch
# hash: `n` = the last epoch issued; `ok` = the first epoch of the band the durable store has
# confirmed (its stored epoch was raised to at least that number) and `okg` = the thread's cache
# generation (KEYS[3], the Redis tier's `g` key) when it was confirmed. The tier bumps `g` for
# every thread written or leased while Redis was unreachable (its dirty-thread repair), which
# makes the next acquisition check the durable store again. KEYS[4] and KEYS[5] are the tier's
# writes in flight `f` and write sequence `s` (cache/scripts.py): while the lease is held its
# token `l:<token>` is in `f`, expiring with the lease, so no other replica trusts what Redis
# holds for the thread and its holder writes without telling Redis until it releases.

# The current time of the Redis server, in ms.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Take the lease if nobody holds it and issue the next epoch, in one round trip. A missing
# counter (new thread, or Redis lost its data) starts at ARGV[3], the first epoch of band 1.
# ARGV: token, ttl ms, seed, band size, then tokens of this process whose Redis call timed out
# (Redis may have run it anyway): a lease held by one of those is taken over, not waited for.
# Returns {0, pttl} when held, else {1, epoch, status, g}: status 1 = band confirmed at this
# generation, 0 = band unconfirmed, 2 = band confirmed at an older generation (revalidate
# against the store).
ACQUIRE_LUA = (
    _NOW
    + """
local holder = redis.call('GET', KEYS[1])
if holder then
  local mine = false
  for i = 5, #ARGV do
    if holder == ARGV[i] then mine = true end
  end
  if not mine then return {0, redis.call('PTTL', KEYS[1])} end
end
if redis.call('HEXISTS', KEYS[2], 'n') == 0 then
  redis.call('HSET', KEYS[2], 'n', ARGV[3])
end
local epoch = redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now) > 0 then redis.call('INCR', KEYS[3]) end
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), 'l:' .. ARGV[1])
redis.call('INCR', KEYS[5])
local band = epoch - epoch % tonumber(ARGV[4])
local gen = redis.call('GET', KEYS[3]) or '0'
local conf = redis.call('HMGET', KEYS[2], 'ok', 'okg')
if tonumber(conf[1] or '-1') ~= band then return {1, epoch, 0, gen} end
if conf[2] == gen then return {1, epoch, 1, gen} end
return {1, epoch, 2, gen}
"""
)

# Record that the durable store confirmed the band (first epoch ARGV[2]) at generation ARGV[3],
# if the lease is still the caller's (ARGV[1]): a lease lost meanwhile is not handed out.
# Returns 1|0.
CONFIRM_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ok = tonumber(redis.call('HGET', KEYS[2], 'ok') or '-1')
if ok <= tonumber(ARGV[2]) then redis.call('HSET', KEYS[2], 'ok', ARGV[2], 'okg', ARGV[3]) end
return 1
"""

# Renew: compare-and-pexpire, and the token's guard in `f` extended. A guard found missing
# (Redis lost it, or this is another server) may have let readers fill what the holder has
# since overwritten: the generation is bumped. ARGV: token, ttl ms. Returns 1, or 0 when the
# lease is gone or another token holds it.
RENEW_LUA = (
    _NOW
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), 'l:' .. ARGV[1]) == 1 then
    redis.call('INCR', KEYS[3])
  end
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
)

# Release: the token's guard taken out of `f` (with a generation bump unless ARGV[2] is '1':
# the holder published everything it wrote), then compare-and-delete (never another holder's
# lease). ARGV: token, clean. Returns 1|0.
RELEASE_LUA = """
redis.call('ZREM', KEYS[4], 'l:' .. ARGV[1])
if ARGV[2] ~= '1' then redis.call('INCR', KEYS[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Move the counter up to ARGV[1] (the first epoch of a band the store has not confirmed) if it is
# lower, then release ARGV[2]'s lease if it still holds it ('' = none). Used when the store
# refused a band, and to repair a counter that fell behind the store's epoch. Returns 1.
FLOOR_LUA = """
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '-1')
if n < tonumber(ARGV[1]) then redis.call('HSET', KEYS[2], 'n', ARGV[1]) end
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[4], 'l:' .. ARGV[2])
  if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('DEL', KEYS[1]) end
end
return 1
"""

# A lease held in the durable store sees Redis again: move the counter up to ARGV[1] (so the
# next Redis epoch is in a band the store must confirm, which waits for this lease's row) and
# take the lease key for the token if it is free. ARGV: floor, token, ttl ms. Returns 1 when the
# key is the token's, 0 when another token holds it.
CLAIM_LUA = """
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '-1')
if n < tonumber(ARGV[1]) then redis.call('HSET', KEYS[2], 'n', ARGV[1]) end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

ACQUIRE = LuaScript(ACQUIRE_LUA)
CONFIRM = LuaScript(CONFIRM_LUA)
RENEW = LuaScript(RENEW_LUA)
RELEASE = LuaScript(RELEASE_LUA)
FLOOR = LuaScript(FLOOR_LUA)
CLAIM = LuaScript(CLAIM_LUA)

NAMES = {
    ACQUIRE.sha: "lease_acquire",
    CONFIRM.sha: "lease_confirm",
    RENEW.sha: "lease_renew",
    RELEASE.sha: "lease_release",
    FLOOR.sha: "lease_floor",
    CLAIM.sha: "lease_claim",
}
"""Each script's name in metrics and spans."""
