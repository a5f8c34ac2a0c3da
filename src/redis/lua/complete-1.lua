--[[
  complete: marks the message done with its result. Called after the PostgreSQL commit, which
  is the truth, so it needs no lease: it also recreates a key that Redis lost.

  A done token lives a whole token ttl (a day by default) and there is one per message, so it is
  written as small as it can be: only what a later script reads of a done token is kept (state
  and mid for claim, complete, rebind and settle; principal and fp for accept's replays; the
  result for claim), and doneAt for inspection. The hash is written afresh (DEL, then one HSET)
  rather than patched: a hash that ever held a value longer than Redis's
  `hash-max-listpack-value` (a claim owner with a long host name, say) is a hashtable for good,
  and rewriting it is what brings it back to a listpack, a third of the bytes. (A hash of the
  previous version keeps its long fingerprint, and so its hashtable, until it expires.)

  KEYS[1]  token hash

  ARGV[1]  mid: the messageId that committed (decimal string)
  ARGV[2]  resultJson: the handler's result as JSON text (stored, never parsed here); '' to keep
           no result in Redis (too large: PostgreSQL's inbox row holds it). Up to 64 bytes it is
           the field `result`; a longer one is cut into 64-byte fields `r1`, `r2`, … (a listpack
           takes no value longer than `hash-max-listpack-value`, 64 by default), read back by
           claim and by this script in order
  ARGV[3]  ttlMs: the key lives at least this long after completion

  Returns
    { 8 }               COMPLETED     (state -> done; owner, lease, claims and the other
                                       times dropped)
    { 9, resultJson }   ALREADY_DONE  (the stored result; nothing written)
    { 9, nil }          ALREADY_DONE  (done without a result in Redis; nothing written)
    {-5, storedMid }    MISMATCH      (the token is bound to another message; nothing written)
]]
local CHUNK = 64
local key = KEYS[1]
local mid = ARGV[1]
local resultJson = ARGV[2]
local ttlMs = tonumber(ARGV[3])

local h = redis.call('HMGET', key, 'state', 'mid', 'result', 'principal', 'fp')
local state, storedMid, result, principal, fp = h[1], h[2], h[3], h[4], h[5]

if storedMid and storedMid ~= '' and storedMid ~= mid then
  return { -5, storedMid }
end

-- The stored result: `result`, or the chunks r1, r2, … in order; nil when none is kept.
local function storedResult()
  if result then return result end
  local parts = {}
  for i = 1, 1000000 do
    local part = redis.call('HGET', key, 'r' .. i)
    if not part then break end
    parts[i] = part
  end
  if #parts == 0 then return nil end
  return table.concat(parts)
end

if state == 'done' then
  local stored = storedResult()
  if stored then
    return { 9, stored }
  end
  return { 9, false }
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Extend, never shorten; a missing key (-2) or one without expiry (-1) gets ttlMs.
local keep = math.max(redis.call('PTTL', key), ttlMs)

local fields = { 'state', 'done', 'mid', mid, 'doneAt', now }
if principal then
  fields[#fields + 1] = 'principal'
  fields[#fields + 1] = principal
end
if fp then
  fields[#fields + 1] = 'fp'
  fields[#fields + 1] = fp
end
if resultJson ~= '' and #resultJson <= CHUNK then
  fields[#fields + 1] = 'result'
  fields[#fields + 1] = resultJson
elseif resultJson ~= '' then
  for i = 1, math.ceil(#resultJson / CHUNK) do
    fields[#fields + 1] = 'r' .. i
    fields[#fields + 1] = string.sub(resultJson, (i - 1) * CHUNK + 1, i * CHUNK)
  end
end
redis.call('DEL', key)
redis.call('HSET', key, unpack(fields))
redis.call('PEXPIRE', key, keep)
return { 8 }
