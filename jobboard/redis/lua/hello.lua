-- hello: check that the board's data set never went backwards, as far as this
-- client can tell, before it works on it (at connect, after every reconnect of
-- the event link, and whenever a script answers RECHECK). Not wrapped.
-- KEYS[1]  P.."board" (routes the call; layout in _lib.lua)
-- ARGV     P, the client's known run id ("" for a new client), epoch, gen,
--          how many server runs to remember, seconds to settle after a restart
--          (0 when the client saw that the server loses nothing: AOF fsync always)
-- Keys     board (created on first use; stamped with each new server run), runs;
--          when it halts the board: every claim ends (leases, job:<id>, waiting:<flow>),
--          publishes "halted" (and "expired" per claim).
-- Returns  {"ok", run id, epoch, gen} | {"reset", run id, epoch, gen} (an operator
--          reset the board: every older claim is void) | {"halted", reason}
local P, known_run = ARGV[1], ARGV[2]
local known_epoch, known_gen, kept = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local settle = tonumber(ARGV[6]) or 0
local key, runs = P .. 'board', P .. 'runs'
local run, t = server_run(), now()
local b = redis.call('HMGET', key, 'run_id', 'epoch', 'gen', 'halted', 'epoch_floor')

local function halt(reason, floor)
  redis.call('HSET', key, 'halted', reason, 'halted_at', fmt(t), 'run_id', run,
    'epoch_floor', math.max(floor, tonumber(b[5]) or 0))
  void_claims(P, t, 'the board halted')
  redis.call('HSETNX', key, 'epoch', floor)
  redis.call('HSETNX', key, 'gen', 0)
  notice(P, 'halted', {reason = reason})
  return {'halted', reason}
end

if b[4] then
  return {'halted', b[4]}
end
if not b[2] then
  if known_run ~= '' then
    return halt('its data set is gone (marker key missing: a restart without persistence, '
      .. 'eviction or a flush); jobs and claims may be lost', known_epoch)
  end
  redis.call('HSET', key, 'run_id', run, 'epoch', 0, 'gen', 0, 'created_at', fmt(t))
  redis.call('RPUSH', runs, run .. ' 0')
  return {'ok', run, 0, 0}
end
local epoch, gen = tonumber(b[2]), tonumber(b[3]) or 0
if b[1] ~= run then
  -- The first client to meet this server run notes where its data set stands.
  -- Nothing was written since the restart: every wrapped script answered RECHECK.
  redis.call('RPUSH', runs, run .. ' ' .. gen)
  redis.call('LTRIM', runs, -kept, -1)
  redis.call('HSET', key, 'run_id', run)
  if settle > 0 then
    -- The server may have lost writes: no claims for a while, so that every
    -- running client that saw them has checked in (each does at its reconnect)
    -- before anyone, a new process too, claims a job that may have finished.
    redis.call('HSET', key, 'settle_until', fmt(t + settle))
  end
end
if known_run == '' then
  return {'ok', run, epoch, gen}
end
if known_epoch > epoch then
  return halt('its epoch went back from ' .. known_epoch .. ' to ' .. epoch
    .. ' (the server lost recent writes)', known_epoch)
end
if known_epoch < epoch then
  return {'reset', run, epoch, gen}
end
local floor = gen
if known_run ~= run then
  -- Every server run since the one this client knew must have started with at
  -- least the changes this client saw.
  local found = false
  for _, entry in ipairs(redis.call('LRANGE', runs, 0, -1)) do
    local r, g = string.match(entry, '^(%x+) (%d+)$')
    if found and tonumber(g) < floor then
      floor = tonumber(g)
    end
    if r == known_run then
      found, floor = true, gen
    end
  end
  if not found then
    return halt('server run ' .. known_run .. ' is not in its history (the server lost '
      .. 'recent writes, or it is another server)', known_epoch)
  end
end
if floor < known_gen then
  return halt('its data set went back: this client saw change ' .. known_gen
    .. ', the server came back with change ' .. floor .. ' (it lost recent writes)', known_epoch)
end
return {'ok', run, epoch, gen}
