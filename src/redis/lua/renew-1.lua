--[[
  renew: extends the lease of the owner that holds the claim. A lease that ran out is still
  renewed while nobody else has claimed the message: no one else can have started it.

  KEYS[1]  token hash

  ARGV[1]  owner
  ARGV[2]  leaseMs: the new lease runs from now

  Returns
    { 6, leaseUntilMs }   RENEWED
    {-6, state, owner }   LOST  (state is `missing` when the key is gone; owner is '' if none)
]]
local key = KEYS[1]
local owner = ARGV[1]
local leaseMs = tonumber(ARGV[2])

local h = redis.call('HMGET', key, 'state', 'owner')
local state, holder = h[1], h[2]

if state ~= 'claimed' or holder ~= owner then
  return { -6, state or 'missing', holder or '' }
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local leaseUntil = now + leaseMs
redis.call('HSET', key, 'lease', leaseUntil)
if redis.call('PTTL', key) < leaseMs then
  redis.call('PEXPIRE', key, leaseMs)
end
return { 6, leaseUntil }
