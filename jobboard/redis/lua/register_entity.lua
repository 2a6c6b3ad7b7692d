-- register_entity: announce or refresh a participant; drop participants of the
-- same kind not refreshed within the TTL. Idempotent.
-- KEYS[1]  P.."entities:"..kind (routes the call; layout in _lib.lua)
-- ARGV     P, kind, name, metadata JSON, ttl seconds
-- Keys     entities:<kind> (hash), seen:<kind> (zset); both expire one TTL
--          after the latest refresh.
-- Returns  {1, settings, time, lease}: the count of changes of the pauses and schedules
--          (a conductor re-reads them when it moved), the board's time and the earliest
--          lease end (false when no job is claimed), so that an idle conductor's
--          heartbeat is all it sends: it learns of other conductors' leases here, not
--          from their events.
local P, kind, name = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[5])
local t = now()
local names, seen = P .. 'entities:' .. kind, P .. 'seen:' .. kind
local stale = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. fmt(t - ttl), 'LIMIT', 0, 100)
for _, old in ipairs(stale) do
  redis.call('HDEL', names, old)
  redis.call('ZREM', seen, old)
end
redis.call('HSET', names, name, ARGV[4])
redis.call('ZADD', seen, fmt(t), name)
local ms = string.format('%d', math.ceil(ttl * 1000))
redis.call('PEXPIRE', names, ms)
redis.call('PEXPIRE', seen, ms)
local head = redis.call('ZRANGE', P .. 'leases', 0, 0, 'WITHSCORES')
return {1, tonumber(redis.call('GET', P .. 'settings')) or 0, fmt(t), head[2] or false}
