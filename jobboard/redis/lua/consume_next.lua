-- consume_next: finish a job (the body of finish.lua, fenced by its claim's token) and,
-- only when that went through, claim the best waiting job for the same owner (the body
-- of claim_next.lua, a fresh token): one call where a worker taking its next job at
-- once would send two. jobboard/redis/session.py puts both bodies in front of this
-- one as finish_step and claim_step; each reads ARGV, refilled here with its own.
-- KEYS[1]  P.."job:"..id (routes the call)
-- ARGV     P, n, then finish's ARGV but its P (n values), then claim_next's but its P
-- Keys     those of finish and claim_next; publishes theirs.
-- Returns  finish's error (no claim made), or {finished job as finish returns it,
--          claim_next's reply}.
local given = {unpack(ARGV)}
local P, n = given[1], tonumber(given[2])
-- Make ARGV hold P then given[first..last] (ARGV itself: the helpers read it too).
local function argv(first, last)
  for i = #ARGV, 2, -1 do
    ARGV[i] = nil
  end
  for i = first, last do
    ARGV[#ARGV + 1] = given[i]
  end
end
argv(3, n + 2)
local finished = finish_step()
if type(finished) == 'table' and finished.err then
  return finished
end
argv(n + 3, #given)
return {finished, claim_step()}
