--[[
  Extends this process's lease of a worker id (the heartbeat).

  KEYS[1]  hash of worker ids: field = id, value = "owner|expiresAtMs"
  ARGV[1]  worker id
  ARGV[2]  owner the lease was acquired with
  ARGV[3]  lease ttl in ms

  Returns
    {2, expiresAtMs}  Renewed: still ours, now until expiresAtMs (Redis time). Also when the
                      lease had lapsed but nobody acquired the id since: the owner field would
                      have changed if anyone had, so no other process minted with it meanwhile.
    {-2}              Gone: no entry for the id (deleted); the lease is lost
    {-3}              HeldByOther: another owner acquired the id (or ours was released); lost
]]
local key = KEYS[1]
local id = ARGV[1]
local owner = ARGV[2]
local ttl = tonumber(ARGV[3])

local value = redis.call('HGET', key, id)
if not value then return {-2} end
local holder = string.match(value, '^(.*)|%d+$')
if holder ~= owner then return {-3} end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expiresAt = now + ttl
redis.call('HSET', key, id, string.format('%s|%d', owner, expiresAt))
return {2, expiresAt}
