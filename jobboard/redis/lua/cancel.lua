-- cancel: a waiting (or scheduled) job ends cancelled at once; a claimed job is flagged and
-- the flag published so that its owner stops it.
-- KEYS[1]  P.."job:"..id (routes the call; layout in _lib.lua)
-- ARGV     P, id, retention seconds
-- Keys     job:<id>, progress:<id>, leases, waiting:<flow>, flows, scheduled, finished,
--          counters; publishes "cancelled" or "cancel_requested".
-- Returns  the job's hash as a flat list, or an error NOTFOUND | FINISHED <state>.
local P, id = ARGV[1], ARGV[2]
local t = now()
local f, err = current(P, id, t)
if not f then
  return fail(err)
end
local key = P .. 'job:' .. id
if f[1] == 'waiting' or f[1] == 'scheduled' then
  if f[1] == 'waiting' then
    dequeue(P, id, f[4])
  else
    redis.call('ZREM', P .. 'scheduled', id)
  end
  finish(P, id, 'cancelled', t, tonumber(ARGV[3]),
    {'cancel_requested', 1, 'last_error', 'cancelled before it started'})
  count(P, 'cancelled')
  emit(P, 'cancelled', id, {token = f[2], flow = f[4]})
elseif f[1] == 'claimed' then
  redis.call('HSET', key, 'cancel_requested', 1, 'updated_at', fmt(t))
  bump(P)
  emit(P, 'cancel_requested', id, {token = f[2], owner = f[3], flow = f[4]}, f[3])
else
  return fail('FINISHED ' .. f[1])
end
return redis.call('HGETALL', key)
