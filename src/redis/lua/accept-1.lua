--[[
  accept: binds an issued token to one request (its fingerprint) and one messageId.
  A missing key and a key of another principal give the same answer, UNKNOWN, so that the API
  cannot be used to probe for other principals' tokens.

  KEYS[1]  token hash

  ARGV[1]  principal
  ARGV[2]  fp: request fingerprint
  ARGV[3]  mid: messageId minted for this request (decimal string), used only on first use
  ARGV[4]  ttlMs: the key lives at least this long after the acceptance

  Returns
    { 2, mid }           ACCEPTED  (first use; state issued -> accepted)
    { 3, mid, state }    REPLAY    (same fingerprint again: the stored mid and current state)
    {-2 }                UNKNOWN   (never issued, expired, or another principal's)
    {-3 }                REUSED    (used before for a different request; nothing written)
]]
local key = KEYS[1]
local principal = ARGV[1]
local fp = ARGV[2]
local mid = ARGV[3]
local ttlMs = tonumber(ARGV[4])

local h = redis.call('HMGET', key, 'state', 'principal', 'fp', 'mid')
local state, owner, storedFp, storedMid = h[1], h[2], h[3], h[4]

if not state or owner ~= principal then
  return { -2 }
end

if state == 'issued' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', key, 'state', 'accepted', 'fp', fp, 'mid', mid, 'acceptedAt', now)
  -- Extend, never shorten: -1 (no expiry) is also below ttlMs, so no key is left immortal.
  if redis.call('PTTL', key) < ttlMs then
    redis.call('PEXPIRE', key, ttlMs)
  end
  return { 2, mid }
end

if storedFp == fp then
  return { 3, storedMid or '', state }
end
return { -3 }
