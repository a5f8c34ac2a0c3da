--[[
  settle: ends the in-flight window that `accept-1.lua` opened, once the request that accepted
  the token has been answered (or has failed): replays of the same request are then answered
  (REPLAY) instead of being told to wait (IN_USE). Only the window of the same messageId is
  cleared; a missing key is fine (Redis may have lost it; PostgreSQL answers replays then).

  KEYS[1]  token hash

  ARGV[1]  mid: the messageId the request was accepted with
  ARGV[2]  "1" to delete the token's state instead (still only for that mid): Redis accepted a
           request that PostgreSQL knows is not the token's first, so what Redis holds is wrong
           and replays must be answered from PostgreSQL

  Returns
    { 10 }               SETTLED   (the window is closed, or there was none)
]]
local key = KEYS[1]
local mid = ARGV[1]

if redis.call('HGET', key, 'mid') == mid then
  if ARGV[2] == '1' then
    redis.call('DEL', key)
  else
    redis.call('HDEL', key, 'pending')
  end
end
return { 10 }
