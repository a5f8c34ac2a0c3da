--[[
  release: gives up a claim (the attempt failed or the worker is shutting down) so that the next
  delivery can claim at once instead of waiting for the lease to run out.

  KEYS[1]  token hash

  ARGV[1]  owner

  Returns
    { 7 }                 RELEASED   (state claimed -> accepted; owner and lease cleared)
    {-7, state, owner }   NOT_OWNER  (nothing written; state `missing` when the key is gone)
]]
local key = KEYS[1]
local owner = ARGV[1]

local h = redis.call('HMGET', key, 'state', 'owner')
local state, holder = h[1], h[2]

if state ~= 'claimed' or holder ~= owner then
  return { -7, state or 'missing', holder or '' }
end

redis.call('HSET', key, 'state', 'accepted')
redis.call('HDEL', key, 'owner', 'lease')
return { 7 }
