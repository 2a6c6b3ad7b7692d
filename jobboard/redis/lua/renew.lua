-- renew: extend the leases of many claims in one call.
-- KEYS[1]  P.."leases" (routes the call; layout in _lib.lua)
-- ARGV     P, lease seconds, then (job id, owner, token) for each claim
-- Keys     job:<id>, leases; publishes "expired" for claims found expired.
-- Returns  {now, s1, s2, ...}: per claim 0 = lost, 1 = renewed,
--          2 = renewed and a cancel was requested.
local P, lease = ARGV[1], tonumber(ARGV[2])
local t = now()
local ends = fmt(t + lease)
local out = {fmt(t)}
local renewed = false
for i = 3, #ARGV, 3 do
  local id, who, token = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local key = P .. 'job:' .. id
  local f = redis.call('HMGET', key, 'state', 'token', 'owner', 'lease_expires_at', 'cancel_requested')
  local status = 0
  if f[1] == 'claimed' and tonumber(f[2]) == token and f[3] == who
      and epoch_of(token) == EPOCH then
    if (tonumber(f[4]) or 0) <= t then
      lapse(P, id, t)
    else
      redis.call('HSET', key, 'lease_expires_at', ends)
      redis.call('ZADD', P .. 'leases', ends, id)
      lower(P, 'reap_at', t + lease)
      status = (f[5] == '1') and 2 or 1
      renewed = true
    end
  end
  out[#out + 1] = status
end
if renewed then
  bump(P)  -- a lost renewal shortens a lease: a change like any other
end
return out
