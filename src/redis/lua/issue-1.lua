--[[
  issue: creates a token in state `issued`, bound to one principal, with a TTL.
  Refuses to touch an existing key: the caller regenerates the token on a collision.

  KEYS[1]  token hash (keys.ts tokenKey)

  ARGV[1]  principal
  ARGV[2]  ttlMs: lifetime of the unused token

  Returns
    { 1, expiresAtMs }   ISSUED     (expiry on the Redis clock)
    {-1 }                COLLISION  (the key exists; nothing written)
]]
local key = KEYS[1]
local principal = ARGV[1]
local ttlMs = tonumber(ARGV[2])

if redis.call('EXISTS', key) == 1 then
  return { -1 }
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

redis.call('HSET', key, 'state', 'issued', 'principal', principal, 'issuedAt', now)
redis.call('PEXPIRE', key, ttlMs)
return { 1, now + ttlMs }
