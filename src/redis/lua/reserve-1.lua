--[[
  reserve: counts new tokens against their principal's bound of outstanding tokens
  (issued, neither used nor expired), before the tokens themselves are issued (issue-1.lua, one
  call per token, each on the token's own key and so, on a cluster, in another slot). Entries
  whose expiry has passed are trimmed first, so the count follows expiry without any sweeper.

  Reserving first errs on the safe side: a process that dies between this script and the issue
  scripts leaves entries without tokens, which only count until they expire; never tokens that
  nothing counts. A token leaves the set when it is accepted (token-store.ts, a ZREM beside the
  accept script), or when it expires.

  KEYS[1]  the principal's set (keys.ts outstandingTokensKey): member = token, score = expiry
           in ms on this key's Redis clock

  ARGV[1]  limit: most outstanding tokens (at least the number of tokens below)
  ARGV[2]  ttlMs: lifetime of the tokens (the same as issue-1.lua gives them)
  ARGV[3…] the tokens

  Returns
    { 12, outstanding, expiresAtMs }   RESERVED    the tokens are counted; `outstanding` now,
                                                    and their expiry on this key's clock
    { -10, retryAfterMs, outstanding } OVER_LIMIT  nothing written; in `retryAfterMs` at the
                                                    latest enough of the outstanding ones will
                                                    have expired to make room
]]
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local ttlMs = tonumber(ARGV[2])
local count = #ARGV - 2

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local outstanding = redis.call('ZCARD', key)

if outstanding + count > limit then
  -- Room for `count` once the `excess` earliest-expiring entries are gone.
  local excess = outstanding + count - limit
  local entry = redis.call('ZRANGE', key, excess - 1, excess - 1, 'WITHSCORES')
  local retryAfterMs = 1
  if entry[2] ~= nil then
    retryAfterMs = math.max(1, tonumber(entry[2]) - now)
  end
  return { -10, retryAfterMs, outstanding }
end

local expiresAt = now + ttlMs
local args = {}
for i = 3, #ARGV do
  args[#args + 1] = expiresAt
  args[#args + 1] = ARGV[i]
end
redis.call('ZADD', key, unpack(args))
-- The set lives as long as its longest-lived entry (ttls may differ between processes).
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', key, tonumber(last[2]))
return { 12, outstanding + count, expiresAt }
