-- reset: an operator's answer to a halted board (after checking what was lost):
-- start a new epoch, so that every later token beats every token issued before,
-- and let clients work again. Their claims from before are void. Not wrapped.
-- KEYS[1]  P.."board" (routes the call; layout in _lib.lua)
-- ARGV     P, the operator client's known epoch
-- Keys     board, runs, and every claim, which ends (leases, job:<id>, waiting:<flow>);
--          publishes "reset" (and "expired" per claim).
-- Returns  {run id, new epoch, gen}
local P = ARGV[1]
local key = P .. 'board'
local run, t = server_run(), now()
local b = redis.call('HMGET', key, 'epoch', 'gen', 'epoch_floor')
local epoch = math.max(tonumber(b[1]) or 0, tonumber(b[3]) or 0, tonumber(ARGV[2]) or 0) + 1
local gen = tonumber(b[2]) or 0
redis.call('HDEL', key, 'halted', 'halted_at', 'settle_until')
redis.call('HSET', key, 'run_id', run, 'epoch', epoch, 'gen', gen, 'reset_at', fmt(t))
redis.call('HSETNX', key, 'created_at', fmt(t))
redis.call('RPUSH', P .. 'runs', run .. ' ' .. gen)
void_claims(P, t, 'the board was reset')
notice(P, 'reset', {epoch = epoch})
return {run, epoch, gen}
