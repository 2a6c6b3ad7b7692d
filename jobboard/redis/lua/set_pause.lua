-- set_pause: pause a flow (store its JSON note) or resume it (empty note), and count the
-- change so that conductors re-read the pauses at their next heartbeat. Not wrapped (as
-- before the count, a pause is an operator's note, not a change of any job).
-- KEYS[1]  P.."pauses" (routes the call; layout in _lib.lua)
-- ARGV     P, flow, note JSON ("" to resume)
-- Keys     pauses, settings.
-- Returns  1 when the flow was paused before, else 0.
local P, flow, note = ARGV[1], ARGV[2], ARGV[3]
local key = P .. 'pauses'
local before = redis.call('HEXISTS', key, flow)
if note == '' then
  redis.call('HDEL', key, flow)
else
  redis.call('HSET', key, flow, note)
end
redis.call('INCR', P .. 'settings')
return before
