"""The Redis tier's Lua scripts: each operation of the tier is one of them, in one round trip.

The key layout they work on is described in ``redis_tier.py``.
"""

from __future__ import annotations

from langgraph_resilient._redis.wire import LuaScript

# Keys every script of a thread works on (the `{thread_id}` hash tag puts them in one Cluster
# slot): KEYS[1] `g`, the thread's cache generation; KEYS[2] `f`, the writes in flight (a
# sorted set: token -> expiry in ms of the Redis clock); KEYS[3] `s`, the write sequence (+1 at
# every announced write). A write is announced (ANNOUNCE) before it is acknowledged, and its
# token leaves `f` when the write is published: while any token is live, no reader trusts what
# Redis holds for the thread and no fill is accepted; a token that expired means its writer died
# between the two, so the generation is bumped (everything cached becomes unreachable).

# The current time of the Redis server, in ms (every replica reads the same clock).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Read a checkpoint (the head when ARGV[3] is empty) with its pending writes. The record and its
# values are sent only when the caller does not hold them already (ARGV[4]/[5]: the checkpoint id
# and generation it holds). ARGV[6]: a token of the caller's that does not make the thread busy
# (a lease holder's, before it wrote), or ''. Returns {gen, ''} while a write is in flight (a
# miss, not to be filled) | {gen, seq} (a miss: fill with that sequence) | {gen, seq, id,
# writes} | {gen, seq, id, writes, record, versions_json, channels, values}.
READ_LUA = (
    _NOW
    + """
local gen = redis.call('GET', KEYS[1]) or '0'
if redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) > 0 then
  gen = tostring(redis.call('INCR', KEYS[1]))
end
local live = redis.call('ZCARD', KEYS[2])
if live > 0 and not (live == 1 and ARGV[6] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[6])) then
  return {gen, ''}
end
local seq = redis.call('GET', KEYS[3]) or '0'
local base = ARGV[1] .. gen .. ':'
local ns = ARGV[2]
local cid = ARGV[3]
if cid == '' then
  cid = redis.call('HGET', base .. 'h', ns)
  if not cid then return {gen, seq} end
end
local writes = redis.call('HGETALL', base .. 'w:' .. ns .. ':' .. cid)
if cid == ARGV[4] and gen == ARGV[5] then return {gen, seq, cid, writes} end
local rec = redis.call('HMGET', base .. 'c:' .. ns .. ':' .. cid, 'r', 'v')
if not rec[1] or not rec[2] then return {gen, seq, cid, writes} end
local ok, versions = pcall(cjson.decode, rec[2])
if not ok or type(versions) ~= 'table' then return {gen, seq, cid, writes} end
local channels, keys = {}, {}
for ch, ver in pairs(versions) do
  channels[#channels + 1] = ch
  keys[#keys + 1] = base .. 'b:' .. ns .. ':' .. ch .. ':' .. ver
end
local values = {}
if #keys > 0 then values = redis.call('MGET', unpack(keys)) end
return {gen, seq, cid, writes, rec[1], rec[2], channels, values}
"""
)

# Announce a write before it is acknowledged: its token in `f` until it is published (ARGV[1],
# live for ARGV[2] ms), and the write sequence moved on, so a fill read from the durable tier
# before this write is refused. Returns the generation (the publication expects it: a thread
# deleted or repaired in between is not republished).
ANNOUNCE_LUA = (
    _NOW
    + """
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('INCR', KEYS[3])
return redis.call('GET', KEYS[1]) or '0'
"""
)

# Cache a checkpoint after the durable tier stored it (or after a read from it): the record, its
# values, the completeness mark of its writes, and the head if this checkpoint is newer. ARGV[7]
# is the mode: 'fill' (an explicit-id read) and 'fill-head' (a head read) carry every write of
# the checkpoint as the durable tier holds them; 'publish' (a write, whose writes may have been
# published first) carries none; 'publish-all' (a lease holder's, at release) carries them all.
# ARGV[8] is the generation the caller saw ('' = any): on a mismatch a thread was deleted or
# repaired since, so a fill gives up and a publish also bumps the generation (the entry it would
# have replaced may now be older than what it just wrote). A fill is also refused while a write
# is in flight or when one was announced since its read (ARGV[9], the sequence that read saw). A
# publish takes its write's token (ARGV[10], '' = none) out of `f`. A writes hash marked `!` (a
# special write was published, maybe out of order: see WRITES_LUA) is only marked complete again
# by a carrier of every write. Every checkpoint cached joins its namespace's history index
# `<gen>:i:<ns>` (see HISTORY_LUA). Returns the generation, or nil.
PUT_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
local mode = ARGV[7]
if ARGV[10] ~= '' then redis.call('ZREM', KEYS[2], ARGV[10]) end
if ARGV[8] ~= '' and ARGV[8] ~= gen then
  if mode == 'publish' or mode == 'publish-all' then redis.call('INCR', KEYS[1]) end
  return false
end
if (mode == 'fill' or mode == 'fill-head') and ((redis.call('GET', KEYS[3]) or '0') ~= ARGV[9]
    or redis.call('ZCARD', KEYS[2]) > 0) then
  return false
end
local base = ARGV[1] .. gen .. ':'
local ns, cid, ttl = ARGV[2], ARGV[3], tonumber(ARGV[6])
local ckey = base .. 'c:' .. ns .. ':' .. cid
redis.call('HSET', ckey, 'r', ARGV[4], 'v', ARGV[5])
redis.call('EXPIRE', ckey, ttl)
local nblobs = tonumber(ARGV[11])
local i = 12
for _ = 1, nblobs do
  redis.call('SET', base .. 'b:' .. ns .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1], ARGV[i + 2],
    'EX', ttl)
  i = i + 3
end
local wkey = base .. 'w:' .. ns .. ':' .. cid
if mode == 'publish' then
  if redis.call('HEXISTS', wkey, '!') == 0 then redis.call('HSET', wkey, '_', '1') end
else
  while i <= #ARGV do
    redis.call('HSET', wkey, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  redis.call('HDEL', wkey, '!')
  redis.call('HSET', wkey, '_', '1')
end
redis.call('EXPIRE', wkey, ttl)
local ikey = base .. 'i:' .. ns
redis.call('ZADD', ikey, 0, cid)
redis.call('EXPIRE', ikey, ttl)
if mode ~= 'fill' then
  local hkey = base .. 'h'
  local cur = redis.call('HGET', hkey, ns)
  if (not cur) or cur < cid then redis.call('HSET', hkey, ns, cid) end
  redis.call('EXPIRE', hkey, ttl)
end
return gen
"""

# Publish a task's writes to a checkpoint's cached writes, taking the write's token (ARGV[5])
# out of `f`; nothing else when the generation is no longer ARGV[6] (the thread was deleted or
# repaired since). Regular writes keep their first value in the durable tier and only stored
# ones are published, so the order of publications does not matter for them. A special write
# (flag '1', from records.is_special) replaces the stored one, and two replacements may be
# published out of order: the hash is marked `!` instead (never complete until a fill or a
# lease holder's publication carries every write), so the next read takes the writes from the
# durable tier. Returns the generation, or nil.
WRITES_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[2], ARGV[5]) end
if ARGV[6] ~= gen then return false end
local wkey = ARGV[1] .. gen .. ':w:' .. ARGV[2] .. ':' .. ARGV[3]
for i = 7, #ARGV, 3 do
  if ARGV[i + 2] == '1' then
    redis.call('HDEL', wkey, ARGV[i], '_')
    redis.call('HSET', wkey, '!', '1')
  else
    redis.call('HSETNX', wkey, ARGV[i], ARGV[i + 1])
  end
end
redis.call('EXPIRE', wkey, tonumber(ARGV[4]))
return gen
"""

# The history of a namespace, newest first (what `list(config, before=..., limit=...)` returns
# for one thread and namespace). `<gen>:i:<ns>` is a sorted set of the checkpoint ids cached
# there (all scores 0: ordered by id, as the durable tier orders them) and `<gen>:l` maps the
# namespace to `lo`, the id down to which the index holds every checkpoint of the namespace
# ('' = all of them, down to the first), set by a fill of what the durable tier listed (see
# INDEX_LUA). Every checkpoint written later is published (it joins the index) or its thread's
# generation is bumped (a new, empty index without a claim), so the claim holds. ARGV:
# base, ns, before ('' = from the head), limit, own token (as READ_LUA), the generation the
# caller's L1 is keyed by, then the ids whose records it holds (at that generation, their
# record and values are not sent). Returns {gen, ''} while a
# write is in flight | {gen, seq} (a miss: fill with that sequence) | {gen, seq, entries,
# channels, versions, values}: entries {id, writes, record|false, versions_json|false}, and
# the values of the records sent (deduplicated).
HISTORY_LUA = (
    _NOW
    + """
local gen = redis.call('GET', KEYS[1]) or '0'
if redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) > 0 then
  gen = tostring(redis.call('INCR', KEYS[1]))
end
local live = redis.call('ZCARD', KEYS[2])
if live > 0 and not (live == 1 and ARGV[5] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[5])) then
  return {gen, ''}
end
local seq = redis.call('GET', KEYS[3]) or '0'
local base = ARGV[1] .. gen .. ':'
local ns = ARGV[2]
local lo = redis.call('HGET', base .. 'l', ns)
if not lo then return {gen, seq} end
local top, bottom = '+', '-'
if ARGV[3] ~= '' then top = '(' .. ARGV[3] end
if lo ~= '' then bottom = '[' .. lo end
local limit = tonumber(ARGV[4])
local ids = redis.call('ZREVRANGEBYLEX', base .. 'i:' .. ns, top, bottom, 'LIMIT', 0, limit)
if #ids < limit and lo ~= '' then return {gen, seq} end
local known = {}
if ARGV[6] == gen then
  for i = 7, #ARGV do known[ARGV[i]] = true end
end
local entries, channels, versions, keys, seen = {}, {}, {}, {}, {}
for _, id in ipairs(ids) do
  local writes = redis.call('HGETALL', base .. 'w:' .. ns .. ':' .. id)
  local rec, vjson = false, false
  if not known[id] then
    local got = redis.call('HMGET', base .. 'c:' .. ns .. ':' .. id, 'r', 'v')
    if not got[1] or not got[2] then return {gen, seq} end
    local ok, vs = pcall(cjson.decode, got[2])
    if not ok or type(vs) ~= 'table' then return {gen, seq} end
    rec, vjson = got[1], got[2]
    for ch, ver in pairs(vs) do
      local key = base .. 'b:' .. ns .. ':' .. ch .. ':' .. ver
      if not seen[key] then
        seen[key] = true
        channels[#channels + 1] = ch
        versions[#versions + 1] = ver
        keys[#keys + 1] = key
      end
    end
  end
  entries[#entries + 1] = {id, writes, rec, vjson}
end
local values = {}
if #keys > 0 then values = redis.call('MGET', unpack(keys)) end
return {gen, seq, entries, channels, versions, values}
"""
)

# Put checkpoint ids into a namespace's history index (HISTORY_LUA), or drop its claim. ARGV:
# base, ns, mode, gen expected ('' = any), sequence expected, lo, before, ttl, then the ids.
# mode 'fill': the ids are a page the durable tier listed from `before` ('' = the head) down
# to `lo` ('' = it reached the first checkpoint), refused as PUT_LUA's fills are (a write in
# flight, or one announced since the read); when the page joins the index's whole range, that
# range grows down to `lo`. mode 'drop': a lease holder could not publish every checkpoint it
# wrote, so the index is no longer whole. Returns 1, or nil when refused.
INDEX_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
local mode = ARGV[3]
if ARGV[4] ~= '' and ARGV[4] ~= gen then return false end
local base = ARGV[1] .. gen .. ':'
local ns, ttl = ARGV[2], tonumber(ARGV[8])
local ikey, lkey = base .. 'i:' .. ns, base .. 'l'
if mode == 'drop' then
  redis.call('HDEL', lkey, ns)
  return 1
end
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[5] or redis.call('ZCARD', KEYS[2]) > 0 then
  return false
end
for i = 9, #ARGV do redis.call('ZADD', ikey, 0, ARGV[i]) end
redis.call('EXPIRE', ikey, ttl)
local cur = redis.call('HGET', lkey, ns)
local joins = ARGV[7] == '' or (cur and ARGV[7] >= cur)
if joins and ((not cur) or ARGV[6] < cur) then
  redis.call('HSET', lkey, ns, ARGV[6])
  redis.call('EXPIRE', lkey, ttl)
end
return 1
"""

# A write was announced but will not be published (it failed, or publishing it failed): take
# its token out of `f` and make what is cached of the thread unreachable.
ABANDON_LUA = """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[1])
"""

# An announced write changed nothing worth publishing (a repeated write): take its token out.
SETTLE_LUA = "return redis.call('ZREM', KEYS[2], ARGV[1])"

BUMP = LuaScript("return redis.call('INCR', KEYS[1])")
READ = LuaScript(READ_LUA)
ANNOUNCE = LuaScript(ANNOUNCE_LUA)
PUT = LuaScript(PUT_LUA)
WRITES = LuaScript(WRITES_LUA)
HISTORY = LuaScript(HISTORY_LUA)
INDEX = LuaScript(INDEX_LUA)
ABANDON = LuaScript(ABANDON_LUA)
SETTLE = LuaScript(SETTLE_LUA)
