"""The Redis tier's Lua scripts: each operation of the tier is one of them, in one round trip.

The key layout they work on is described in ``redis_tier.py``.
"""

from __future__ import annotations

from langgraph_resilient._redis.wire import LuaScript

# Read a checkpoint (the head when ARGV[3] is empty) with its pending writes. The record and its
# values are sent only when the caller does not hold them already (ARGV[4]/[5]: the checkpoint id
# and generation it holds). Returns {gen} | {gen, id, writes} | {gen, id, writes, record,
# versions_json, channels, values}.
READ_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
local base = ARGV[1] .. gen .. ':'
local ns = ARGV[2]
local cid = ARGV[3]
if cid == '' then
  cid = redis.call('HGET', base .. 'h', ns)
  if not cid then return {gen} end
end
local writes = redis.call('HGETALL', base .. 'w:' .. ns .. ':' .. cid)
if cid == ARGV[4] and gen == ARGV[5] then return {gen, cid, writes} end
local rec = redis.call('HMGET', base .. 'c:' .. ns .. ':' .. cid, 'r', 'v')
if not rec[1] or not rec[2] then return {gen, cid, writes} end
local ok, versions = pcall(cjson.decode, rec[2])
if not ok or type(versions) ~= 'table' then return {gen, cid, writes} end
local channels, keys = {}, {}
for ch, ver in pairs(versions) do
  channels[#channels + 1] = ch
  keys[#keys + 1] = base .. 'b:' .. ns .. ':' .. ch .. ':' .. tostring(ver)
end
local values = {}
if #keys > 0 then values = redis.call('MGET', unpack(keys)) end
return {gen, cid, writes, rec[1], rec[2], channels, values}
"""

# Cache a checkpoint after the durable tier stored it (or after a read from it): the record, its
# values, the completeness mark of its writes (plus, for a refill, the writes themselves, never
# replacing newer ones), and the head if this checkpoint is newer. ARGV[7] is the mode: 'fill'
# (an explicit-id read), 'fill-head' (a head read), 'publish' (a write). ARGV[8] is the
# generation the caller saw ('' = any). On a mismatch a thread was deleted or repaired since:
# a fill just gives up; a publish also bumps the generation, because the entry it would have
# replaced may now be older than what it just wrote. Fills are also refused while the thread's
# lease is held: its holder may be writing without publishing (see DeferredPublication).
# Returns the generation, or nil.
PUT_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
if ARGV[8] ~= '' and ARGV[8] ~= gen then
  if ARGV[7] == 'publish' then redis.call('INCR', KEYS[1]) end
  return false
end
if ARGV[7] ~= 'publish' and redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local base = ARGV[1] .. gen .. ':'
local ns, cid, ttl = ARGV[2], ARGV[3], tonumber(ARGV[6])
local ckey = base .. 'c:' .. ns .. ':' .. cid
redis.call('HSET', ckey, 'r', ARGV[4], 'v', ARGV[5])
redis.call('EXPIRE', ckey, ttl)
local nblobs = tonumber(ARGV[9])
local i = 10
for _ = 1, nblobs do
  redis.call('SET', base .. 'b:' .. ns .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1], ARGV[i + 2],
    'EX', ttl)
  i = i + 3
end
local wkey = base .. 'w:' .. ns .. ':' .. cid
while i <= #ARGV do
  redis.call('HSETNX', wkey, ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', wkey, '_', '1')
redis.call('EXPIRE', wkey, ttl)
if ARGV[7] ~= 'fill' then
  local hkey = base .. 'h'
  local cur = redis.call('HGET', hkey, ns)
  if (not cur) or cur < cid then redis.call('HSET', hkey, ns, cid) end
  redis.call('EXPIRE', hkey, ttl)
end
return gen
"""

# Add a task's writes to a checkpoint's cached writes: regular writes keep the first value,
# special ones (flag '1', from records.is_special) the latest, as in the durable tier (the
# rule's one definition for Redis).
WRITES_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
local wkey = ARGV[1] .. gen .. ':w:' .. ARGV[2] .. ':' .. ARGV[3]
for i = 5, #ARGV, 3 do
  if ARGV[i + 2] == '1' then
    redis.call('HSET', wkey, ARGV[i], ARGV[i + 1])
  else
    redis.call('HSETNX', wkey, ARGV[i], ARGV[i + 1])
  end
end
redis.call('EXPIRE', wkey, tonumber(ARGV[4]))
return gen
"""


# A lease holder withdraws the thread's cached entries: bump the generation. The lease module
# treats a generation that moved since its epoch band was confirmed (`okg` in the thread's epoch
# hash, KEYS[2]) as a sign of a repair after an outage and re-checks the durable store; this
# bump is the holder's own, so it carries the confirmation along unless it was stale already.
WITHDRAW_LUA = """
local old = redis.call('GET', KEYS[1]) or '0'
local new = redis.call('INCR', KEYS[1])
if redis.call('HGET', KEYS[2], 'okg') == old then
  redis.call('HSET', KEYS[2], 'okg', tostring(new))
end
return new
"""

BUMP = LuaScript("return redis.call('INCR', KEYS[1])")
READ = LuaScript(READ_LUA)
PUT = LuaScript(PUT_LUA)
WRITES = LuaScript(WRITES_LUA)
WITHDRAW = LuaScript(WITHDRAW_LUA)
