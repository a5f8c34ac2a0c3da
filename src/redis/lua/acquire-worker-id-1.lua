--[[
  Leases a snowflake worker id that no live process holds.

  KEYS[1]  hash of worker ids (keys.ts workerIdsKey): field = id, value = "owner|expiresAtMs"
  ARGV[1]  owner: non-empty, unique per process and lease
  ARGV[2]  lease ttl in ms
  ARGV[3]  lowest worker id of the range
  ARGV[4]  highest worker id of the range
  ARGV[5]  worker id to start scanning at (random, so starting processes spread over the range)
  ARGV[6]  a fresh random epoch id, used only when the hash has no epoch

  Returns
    {1, id, expiresAtMs, epoch, epochAgeMs}  Acquired: the id was free, expired or released,
                                             and is now ours
    {-1}                                     AllLeased: every id of the range is held by an
                                             unexpired lease

  The epoch names the lifetime of the leases as this Redis holds them: the hash's own epoch
  (field `epoch`, written by the first acquire into an empty hash, never removed) and the Redis
  server's run_id. A new epoch means the hash was lost (Redis flushed, or restarted without
  persistence), or Redis restarted or failed over (a snapshot or replica may hold leases older
  than the ones processes still mint with), or the hash never existed. Processes that leased ids
  before may still be minting with them for up to a ttl; the caller learns whether that can be
  by comparing the epoch with the one PostgreSQL remembers (id-service.ts). Its age is the
  younger of the hash epoch's and the server's uptime.

  Times come from Redis TIME, so the clocks of the competing processes never matter. A value
  that cannot be parsed counts as expired. A released id may carry an empty owner and a
  cool-down expiry (see release-worker-id-1.lua); it is free once that expiry has passed.
]]
local key = KEYS[1]
local owner = ARGV[1]
local ttl = tonumber(ARGV[2])
local lowest = tonumber(ARGV[3])
local highest = tonumber(ARGV[4])
local start = tonumber(ARGV[5])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local epoch = redis.call('HGET', key, 'epoch')
if not epoch then
  epoch = string.format('%s|%d', ARGV[6], now)
  redis.call('HSET', key, 'epoch', epoch)
end
local hashEpoch, createdAt = string.match(epoch, '^(.*)|(%d+)$')
local info = redis.call('INFO', 'server')
local runId = string.match(info, 'run_id:(%w+)') or ''
local uptimeMs = (tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0) * 1000
local epochAge = math.max(0, math.min(now - (tonumber(createdAt) or now), uptimeMs))

local count = highest - lowest + 1
for i = 0, count - 1 do
  local id = lowest + (start - lowest + i) % count
  local value = redis.call('HGET', key, id)
  local expiresAt = value and tonumber(string.match(value, '|(%d+)$'))
  if not expiresAt or expiresAt <= now then
    local newExpiresAt = now + ttl
    redis.call('HSET', key, id, string.format('%s|%d', owner, newExpiresAt))
    return {1, id, newExpiresAt, (hashEpoch or epoch) .. '@' .. runId, epochAge}
  end
end
return {-1}
