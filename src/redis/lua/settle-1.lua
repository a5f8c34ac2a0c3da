--[[
  settle: ends the in-flight window that `accept-1.lua` opened, once the request that accepted
  the token has been answered (or has failed): replays of the same request are then answered
  (REPLAY) instead of being told to wait (IN_USE). Only the window of the same messageId is
  cleared; a missing key is fine (Redis may have lost it; PostgreSQL answers replays then).

  KEYS[1]  token hash

  ARGV[1]  mid: the messageId the request was accepted with

  Returns
    { 10 }               SETTLED   (the window is closed, or there was none)
]]
local key = KEYS[1]
local mid = ARGV[1]

if redis.call('HGET', key, 'mid') == mid then
  redis.call('HDEL', key, 'pending')
end
return { 10 }
