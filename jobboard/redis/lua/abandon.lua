-- abandon: give a claimed job back; it waits again at once in its old place.
-- Fenced by the claim token unless forced (an operator releasing a stuck job).
-- KEYS[1]  P.."job:"..id (routes the call; layout in _lib.lua)
-- ARGV     P, id, who, token ("" when forced), forced "1"/"0", has reason "1"/"0", reason,
--          refund "1"/"0" (give back the attempt this claim counted)
-- Keys     job:<id>, leases, waiting:<flow>, flows, counters; publishes "abandoned".
-- Returns  the job's hash as a flat list, or an error as save_progress, or
--          IDLE when a forced abandon finds the job waiting.
local f, err, P, id, who, forced, t = fenced_head()
if not f then
  return fail(err)
end
if f[1] ~= 'claimed' then
  return fail('IDLE')
end
local key = P .. 'job:' .. id
redis.call('HSET', key, 'state', 'waiting', 'owner', '', 'claimed_at', '',
  'lease_expires_at', '', 'updated_at', fmt(t))
if ARGV[8] == '1' and (tonumber(redis.call('HGET', key, 'attempts')) or 0) > 0 then
  redis.call('HINCRBY', key, 'attempts', -1)
end
if ARGV[6] == '1' then
  redis.call('HSET', key, 'last_error', ARGV[7])
end
redis.call('ZREM', P .. 'leases', id)
enqueue(P, id, f[4], f[5])
count(P, 'abandoned')
emit(P, 'abandoned', id, {token = f[2], owner = who, forced = forced, flow = f[4]}, f[3])
return redis.call('HGETALL', key)
