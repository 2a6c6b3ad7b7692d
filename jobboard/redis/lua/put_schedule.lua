-- put_schedule: compare-and-set one record of the schedules' store.
-- KEYS[1]  P.."schedules" (routes the call; layout in _lib.lua)
-- ARGV     P, name, record JSON, expected version ("" when the name must be new)
-- Keys     schedules, schedule_versions, settings.
-- Returns  {1, new version} when written, {0, current version or -1 if none} when the
--          expected version does not match (nothing written).
local P, name, record, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local current = tonumber(redis.call('HGET', P .. 'schedule_versions', name))
if (expected == '' and current) or (expected ~= '' and current ~= tonumber(expected)) then
  return {0, current or -1}
end
local version = (current or 0) + 1
redis.call('HSET', P .. 'schedules', name, record)
redis.call('HSET', P .. 'schedule_versions', name, version)
redis.call('INCR', P .. 'settings')  -- conductors re-read the schedules
bump(P)
return {1, version}
