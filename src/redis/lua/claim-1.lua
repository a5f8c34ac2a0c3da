--[[
  claim: takes the lease on a message for one worker, or says why not.
  A missing key is claimable: Redis may have lost its data, and PostgreSQL (the inbox) is the
  truth; the claim only keeps two workers from running the message at the same time.

  KEYS[1]  token hash

  ARGV[1]  owner: unique per delivery attempt of a worker
  ARGV[2]  leaseMs
  ARGV[3]  mid: the messageId the job carries (decimal string)
  ARGV[4]  ttlMs: the key lives at least max(ttlMs, leaseMs) after the claim

  Returns
    { 4, leaseUntilMs }          CLAIMED   (state -> claimed by owner)
    { 5, resultJson }            DONE      (already applied: the stored result, from `result`
                                            or its chunks r1, r2, …: see complete-1.lua)
    { 5, nil }                   DONE      (already applied; no result in Redis, see
                                            complete-1.lua: PostgreSQL's inbox row holds it)
    {-4, leaseUntilMs, owner }   BUSY      (another owner holds a live lease)
    {-5, storedMid }             MISMATCH  (the token is bound to another message; nothing written)
]]
local key = KEYS[1]
local owner = ARGV[1]
local leaseMs = tonumber(ARGV[2])
local mid = ARGV[3]
local ttlMs = tonumber(ARGV[4])

local h = redis.call('HMGET', key, 'state', 'owner', 'lease', 'mid', 'result')
local state, holder, lease, storedMid, result = h[1], h[2], tonumber(h[3] or '0') or 0, h[4], h[5]

-- Checked before `done`: another message's result must never pass for this message's.
if storedMid and storedMid ~= '' and storedMid ~= mid then
  return { -5, storedMid }
end

if state == 'done' then
  if result then
    return { 5, result }
  end
  local parts = {}
  for i = 1, 1000000 do
    local part = redis.call('HGET', key, 'r' .. i)
    if not part then break end
    parts[i] = part
  end
  if #parts > 0 then
    return { 5, table.concat(parts) }
  end
  return { 5, false }
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if state == 'claimed' and holder ~= owner and lease > now then
  return { -4, lease, holder or '' }
end

local leaseUntil = now + leaseMs
redis.call('HSET', key, 'state', 'claimed', 'owner', owner, 'lease', leaseUntil, 'mid', mid,
  'claimedAt', now)
redis.call('HINCRBY', key, 'claims', 1)
-- The key must outlive the lease, or an expiry would free a held message.
local keep = math.max(ttlMs, leaseMs)
if redis.call('PTTL', key) < keep then
  redis.call('PEXPIRE', key, keep)
end
return { 4, leaseUntil }
