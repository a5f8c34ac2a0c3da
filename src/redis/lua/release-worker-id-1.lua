--[[
  Gives a worker id back at shutdown, if this process still holds it.

  KEYS[1]  hash of worker ids: field = id, value = "owner|expiresAtMs"
  ARGV[1]  worker id
  ARGV[2]  owner the lease was acquired with
  ARGV[3]  cool-down in ms: the id stays unavailable this long after release (0 deletes the
           entry). Another host whose clock runs behind ours could otherwise acquire the id at
           once and mint ids in milliseconds we already used.

  Returns
    {3}   Released
    {-2}  Gone: no entry for the id; nothing done
    {-3}  HeldByOther: another owner holds the id; nothing done
]]
local key = KEYS[1]
local id = ARGV[1]
local owner = ARGV[2]
local cooldown = tonumber(ARGV[3])

local value = redis.call('HGET', key, id)
if not value then return {-2} end
local holder = string.match(value, '^(.*)|%d+$')
if holder ~= owner then return {-3} end

if cooldown > 0 then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  -- An empty owner marks a released id; no lease is ever acquired with an empty owner.
  redis.call('HSET', key, id, string.format('|%d', now + cooldown))
else
  redis.call('HDEL', key, id)
end
return {3}
