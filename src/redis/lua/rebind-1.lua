--[[
  rebind: makes a token's state agree with PostgreSQL's acceptance record, which is the truth.
  Redis can go back in time (restored from an older snapshot, an async replica promoted): a
  token PostgreSQL accepted as message M1 is back to `issued`, and a retry of the same request
  binds it to a fresh id M2; or a worker claims the restored token for M1, which leaves it
  without the request's fingerprint. Either way Redis would refuse the message's own deliveries
  (claim: MISMATCH) or its genuine replays (accept: REUSED). The caller has read the record
  (principal, fingerprint, messageId) from PostgreSQL and writes it over what Redis holds, but
  only if Redis still holds what the caller saw (`fromMid`): a concurrent rebind or claim wins.

  State that belonged to another message id (a claim or a result of M2, which no job carries)
  is dropped: the token goes back to `accepted` for `mid`, claimable at once. When the id does
  not change, the state is kept (a `done` M1 stays done) and only fingerprint and principal are
  filled in.

  KEYS[1]  token hash

  ARGV[1]  fromMid: the messageId the caller saw Redis hold ('' for none)
  ARGV[2]  mid: the messageId PostgreSQL recorded for the token (decimal string)
  ARGV[3]  principal the token was accepted for
  ARGV[4]  fp: the recorded request fingerprint
  ARGV[5]  ttlMs: the key lives at least this long after the rebind

  Returns
    { 11, state }      REBOUND  (the hash holds mid, fp and principal; its state now)
    {-9, storedMid }   MOVED    (the key is gone or holds another mid than fromMid; nothing
                                 written; storedMid is '' when there is none)
]]
local key = KEYS[1]
local fromMid = ARGV[1]
local mid = ARGV[2]
local principal = ARGV[3]
local fp = ARGV[4]
local ttlMs = tonumber(ARGV[5])

local h = redis.call('HMGET', key, 'state', 'mid')
local state, storedMid = h[1], h[2] or ''

if not state or storedMid ~= fromMid then
  return { -9, storedMid }
end

redis.call('HSET', key, 'principal', principal, 'fp', fp)
if storedMid ~= mid or state == 'issued' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if storedMid ~= mid then
    redis.call('HDEL', key, 'owner', 'lease', 'result', 'claimedAt', 'doneAt')
    -- A long result's chunks (complete-1.lua), in order: the first one missing ends them.
    for i = 1, 1000000 do
      if redis.call('HDEL', key, 'r' .. i) == 0 then break end
    end
  end
  redis.call('HSET', key, 'state', 'accepted', 'mid', mid, 'acceptedAt', now)
  state = 'accepted'
end
if redis.call('PTTL', key) < ttlMs then
  redis.call('PEXPIRE', key, ttlMs)
end
return { 11, state }
