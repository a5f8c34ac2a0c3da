--[[
  accept: binds an issued token to one request (its fingerprint) and one messageId.
  A missing key and a key of another principal give the same answer, UNKNOWN, so that the API
  cannot be used to probe for other principals' tokens.

  While the request that accepted the token is still being answered (recorded in PostgreSQL,
  added to BullMQ), the hash holds `pending` = the end of that request's in-flight window; the
  same request again in that window is IN_USE (HTTP 409), not a replay: the first answer does not
  exist yet. `settle-1.lua` clears `pending` when the first request ends, whether it succeeded or
  failed; a request that died leaves it to run out, and the next replay takes over.

  KEYS[1]  token hash

  ARGV[1]  principal
  ARGV[2]  fp: request fingerprint, in its stored form (token-fingerprint.ts)
  ARGV[3]  mid: messageId minted for this request (decimal string), used only on first use
  ARGV[4]  ttlMs: the key lives at least this long after the acceptance
  ARGV[5]  inFlightMs: length of the in-flight window; absent or 0 sets none (optional)
  ARGV[6]  legacyFp: the fingerprint as given, which hashes written before the stored form
           hold; compared too, never written (optional)

  Returns
    { 2, mid }             ACCEPTED  (first use; state issued -> accepted)
    { 3, mid, state }      REPLAY    (same fingerprint again: the stored mid and current state)
    {-2 }                  UNKNOWN   (never issued, expired, or another principal's)
    {-3, storedMid }       REUSED    (used before for a different request, as Redis remembers it;
                                      nothing written; storedMid is '' when there is none).
                                      Redis may have gone back in time, so the caller asks
                                      PostgreSQL before it answers so (see rebind-1.lua)
    {-8, pendingUntilMs }  IN_USE    (same fingerprint, the first request still in flight)
]]
local key = KEYS[1]
local principal = ARGV[1]
local fp = ARGV[2]
local mid = ARGV[3]
local ttlMs = tonumber(ARGV[4])
local inFlightMs = tonumber(ARGV[5] or '0') or 0
local legacyFp = ARGV[6]

local h = redis.call('HMGET', key, 'state', 'principal', 'fp', 'mid', 'pending')
local state, owner, storedFp, storedMid, pending = h[1], h[2], h[3], h[4], h[5]

if not state or owner ~= principal then
  return { -2 }
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if state == 'issued' then
  redis.call('HSET', key, 'state', 'accepted', 'fp', fp, 'mid', mid, 'acceptedAt', now)
  if inFlightMs > 0 then
    redis.call('HSET', key, 'pending', now + inFlightMs)
  end
  -- Extend, never shorten: -1 (no expiry) is also below ttlMs, so no key is left immortal.
  if redis.call('PTTL', key) < ttlMs then
    redis.call('PEXPIRE', key, ttlMs)
  end
  return { 2, mid }
end

if storedFp == fp or (legacyFp and storedFp == legacyFp) then
  -- Only `accepted` can be in flight: a claimed or done message was in BullMQ, so it was answered.
  local pendingUntil = tonumber(pending or '0') or 0
  if state == 'accepted' and pendingUntil > now then
    return { -8, pendingUntil }
  end
  return { 3, storedMid or '', state }
end
return { -3, storedMid or '' }
