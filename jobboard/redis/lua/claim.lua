-- claim: claim one named waiting job (ending its expired lease first), or trash
-- it when it is poison.
-- KEYS[1]  P.."job:"..id (routes the call; layout in _lib.lua)
-- ARGV     P, id, who, lease seconds, retention seconds, reap batch
-- Keys     job:<id>, leases, waiting:<flow>, flows, finished, counters;
--          publishes "expired", "trashed", "claimed".
-- Returns  the claimed job's id then its hash as a flat list, or an error
--          NOTFOUND | UNCLAIMABLE <state> [by <owner>] | POISON <reason> | SETTLING <s>.
local P, id, who = ARGV[1], ARGV[2], ARGV[3]
local t = now()
if SETTLING then
  return fail('SETTLING ' .. string.format('%.1f', SETTLING - t))
end
due_steps(P, t, tonumber(ARGV[6]))
local f, err = current(P, id, t)
if not f then
  return fail(err)
end
if f[1] ~= 'waiting' then
  local owner = (f[3] and f[3] ~= '') and (' by ' .. f[3]) or ''
  return fail('UNCLAIMABLE ' .. f[1] .. owner)
end
dequeue(P, id, f[4])
local job, reason = take(P, id, who, tonumber(ARGV[4]), tonumber(ARGV[5]), t)
if not job then
  return fail('POISON ' .. reason)
end
return job
