-- remove_schedule: delete one record of the schedules' store, version-checked when asked.
-- KEYS[1]  P.."schedules" (routes the call; layout in _lib.lua)
-- ARGV     P, name, expected version ("" for any)
-- Keys     schedules, schedule_versions, settings.
-- Returns  {1, removed 1/0} when done, {0, current version or -1 if none} on a mismatch.
local P, name, expected = ARGV[1], ARGV[2], ARGV[3]
local current = tonumber(redis.call('HGET', P .. 'schedule_versions', name))
if expected ~= '' and current ~= tonumber(expected) then
  return {0, current or -1}
end
redis.call('HDEL', P .. 'schedules', name)
redis.call('HDEL', P .. 'schedule_versions', name)
redis.call('INCR', P .. 'settings')  -- conductors re-read the schedules
bump(P)
return {1, current and 1 or 0}
