--[[
  complete: marks the message done with its result. Called after the PostgreSQL commit, which
  is the truth, so it needs no lease: it also recreates a key that Redis lost.

  KEYS[1]  token hash

  ARGV[1]  mid: the messageId that committed (decimal string)
  ARGV[2]  resultJson: the handler's result as JSON text (stored, never parsed here)
  ARGV[3]  ttlMs: the key lives at least this long after completion

  Returns
    { 8 }               COMPLETED     (state -> done; owner and lease cleared)
    { 9, resultJson }   ALREADY_DONE  (the stored result; nothing written)
    {-5, storedMid }    MISMATCH      (the token is bound to another message; nothing written)
]]
local key = KEYS[1]
local mid = ARGV[1]
local resultJson = ARGV[2]
local ttlMs = tonumber(ARGV[3])

local h = redis.call('HMGET', key, 'state', 'mid', 'result')
local state, storedMid, result = h[1], h[2], h[3]

if storedMid and storedMid ~= '' and storedMid ~= mid then
  return { -5, storedMid }
end

if state == 'done' then
  return { 9, result or 'null' }
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', key, 'state', 'done', 'result', resultJson, 'mid', mid, 'doneAt', now)
redis.call('HDEL', key, 'owner', 'lease')
if redis.call('PTTL', key) < ttlMs then
  redis.call('PEXPIRE', key, ttlMs)
end
return { 8 }
