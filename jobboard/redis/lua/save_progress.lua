-- save_progress: store one atom's JSON progress record, fenced by the claim token.
-- KEYS[1]  P.."job:"..id (routes the call; layout in _lib.lua)
-- ARGV     P, id, who, token, "0" (never forced), atom name, record JSON
-- Keys     job:<id> (checked, and the record written in its field "progress:"..atom),
--          board (gen); an expired
--          lease found here is ended (publishes "expired") and the write refused.
--          Sent by the board's own client it does not read the marker (MARKED in
--          _lib.lua): a halt or a reset ends every claim, so the fence refuses.
-- Returns  1, or an error NOTFOUND | FINISHED | NOTCLAIMED | STALE | MISMATCH | NOTOWNER.
local f, err, P, id = fenced_head()
if not f then
  return fail(err)
end
redis.call('HSET', P .. 'job:' .. id, PROGRESS .. ARGV[6], ARGV[7])
bump(P)
return 1
