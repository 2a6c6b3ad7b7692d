-- observe: an observer (a listener of every event, a waiter on every flow) follows every
-- event: until then, an owner's event is also published on P.."events". The observer
-- runs it before it subscribes and then every third of `ttl`. Not wrapped; it never
-- creates the marker (a board whose marker is gone is for hello to find).
-- KEYS[1]  P.."board" (routes the call; layout in _lib.lua)
-- ARGV     P, ttl seconds
-- Keys     board (field observed_until: board time, only ever moved forward).
-- Returns  1 when set, 0 when the board has no marker.
local P, ttl = ARGV[1], tonumber(ARGV[2])
local key = P .. 'board'
if redis.call('EXISTS', key) == 0 then
  return 0
end
local until_t = now() + ttl
if until_t > (tonumber(redis.call('HGET', key, 'observed_until')) or 0) then
  redis.call('HSET', key, 'observed_until', fmt(until_t))
end
return 1
