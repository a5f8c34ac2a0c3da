--[[
  remove-jobs: removes a batch of jobs of one BullMQ queue in one call, doing for each exactly
  what BullMQ's own removal (removeJob-2.lua, `queue.remove(id)`) does to a job that has no lock,
  no parent or children, no deduplication id and no job scheduler: take its id out of whichever
  state it is in, delete its hash and its logs, and add a `removed` event. Jobs with any of those
  ties are left untouched and returned, for the caller to remove with BullMQ's own script (which
  owns those rules); jobs whose hash does not exist are skipped, as the caller did with EXISTS
  before calling BullMQ.

  Why a script of our own: BullMQ's removal is one script call per job, and its search of the
  wait list starts at the head (the newest jobs). Dead-letter copies sit at the tail (they are
  oldest first, as replay visits them), so a replay of N copies cost N calls of O(N) each.
  Here the lists are searched from the tail (LREM count -1): an id is in at most one list, once,
  so the result is the same as BullMQ's LREM count 1.

  Like every BullMQ script, it builds job keys from the queue's key prefix; the keys of one queue
  share a hash slot when the prefix carries a hash tag, as BullMQ requires in a cluster.

  KEYS[1]   completed        (zset)
  KEYS[2]   waiting-children (zset)
  KEYS[3]   delayed          (zset)
  KEYS[4]   failed           (zset)
  KEYS[5]   prioritized      (zset)
  KEYS[6]   wait             (list)
  KEYS[7]   paused           (list)
  KEYS[8]   active           (list)
  KEYS[9]   meta             (hash)
  KEYS[10]  events           (stream)

  ARGV[1]   key prefix of the queue's jobs, `<prefix>:<queue>:`
  ARGV[2…]  job ids

  Returns
    { removed, missing, id… }  removed: jobs deleted here; missing: ids without a job hash
                               (nothing done); id…: jobs left for BullMQ's removal (locked,
                               in a flow, deduplicated, or made by a job scheduler)
]]
local rcall = redis.call
local zsets = {
  { KEYS[1], 'completed' },
  { KEYS[2], 'waiting-children' },
  { KEYS[3], 'delayed' },
  { KEYS[4], 'failed' },
  { KEYS[5], 'prioritized' },
}
local lists = { { KEYS[6], 'wait' }, { KEYS[7], 'paused' }, { KEYS[8], 'active' } }
local metaKey = KEYS[9]
local eventsKey = KEYS[10]
local prefix = ARGV[1]

-- BullMQ's removeJobFromAnyState, in its order (zsets first: O(1) checks).
local function removeFromAnyState(jobId)
  for _, z in ipairs(zsets) do
    if rcall('ZREM', z[1], jobId) == 1 then return z[2] end
  end
  for _, l in ipairs(lists) do
    if rcall('LREM', l[1], -1, jobId) == 1 then return l[2] end
  end
  return 'unknown'
end

local removed, missing = 0, 0
local left = {}
local maxEvents

for i = 2, #ARGV do
  local jobId = ARGV[i]
  local jobKey = prefix .. jobId
  if rcall('EXISTS', jobKey) == 0 then
    missing = missing + 1
  else
    local ties = rcall('HMGET', jobKey, 'rjk', 'parentKey', 'deid')
    if ties[1] or ties[2] or ties[3] or rcall('EXISTS', jobKey .. ':lock',
        jobKey .. ':dependencies', jobKey .. ':processed', jobKey .. ':failed',
        jobKey .. ':unsuccessful') > 0 then
      left[#left + 1] = jobId
    else
      local prev = removeFromAnyState(jobId)
      rcall('DEL', jobKey, jobKey .. ':logs')
      -- BullMQ's getOrSetMaxEvents, once per call.
      if not maxEvents then
        maxEvents = rcall('HGET', metaKey, 'opts.maxLenEvents')
        if not maxEvents then
          maxEvents = 10000
          rcall('HSET', metaKey, 'opts.maxLenEvents', maxEvents)
        end
      end
      rcall('XADD', eventsKey, 'MAXLEN', '~', maxEvents, '*', 'event', 'removed', 'jobId', jobId,
        'prev', prev)
      removed = removed + 1
    end
  end
end

local reply = { removed, missing }
for _, jobId in ipairs(left) do reply[#reply + 1] = jobId end
return reply
