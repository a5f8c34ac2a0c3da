/**
 * Removing jobs of a BullMQ queue in bulk, through `redis/lua/remove-jobs-10.lua`: the script's
 * keys (BullMQ's key names, in its KEYS order) are spelled here and nowhere else. Dead-letter
 * replay uses it to take the visible copies off `<queue>.dlq`.
 */
import type { Queue } from 'bullmq';
import type { RedisClient } from '../redis/connection.js';
import { runScript } from '../redis/scripts.js';

/** Job ids per call of `lua/remove-jobs-10.lua`: bounds how long one call holds Redis. */
export const REMOVE_JOBS_PER_CALL = 500;

/** The queue keys `lua/remove-jobs-10.lua` takes, in its KEYS order (BullMQ's key names). */
const REMOVE_JOBS_KEYS = [
  'completed',
  'waiting-children',
  'delayed',
  'failed',
  'prioritized',
  'wait',
  'paused',
  'active',
  'meta',
  'events',
] as const;

/** What {@link removeJobs} did. */
export interface RemovedJobs {
  /** Jobs removed (by the batch script, or by BullMQ for the ones it left). */
  removed: number;
  /** Ids with no job: nothing to do. */
  missing: number;
  /** Ids BullMQ refused to remove: locked, i.e. a live delivery. */
  refused: string[];
}

/**
 * Removes jobs of one queue, as `queue.remove(id)` would, but in a few script calls instead of
 * one per job (see the header of `lua/remove-jobs-10.lua`). Jobs the script leaves (locked, in a
 * flow, deduplicated or of a job scheduler) go through BullMQ's own removal, which owns those
 * rules; a removal BullMQ refuses because the job is locked is reported, not thrown.
 */
export async function removeJobs(
  redis: RedisClient,
  queue: Queue,
  jobIds: readonly string[],
): Promise<RemovedJobs> {
  const keys = REMOVE_JOBS_KEYS.map((type) => queue.toKey(type));
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < jobIds.length; i += REMOVE_JOBS_PER_CALL) {
    // Issued without waiting for each other: the connection carries them back to back.
    const ids = jobIds.slice(i, i + REMOVE_JOBS_PER_CALL);
    calls.push(runScript(redis, 'remove-jobs', keys, [queue.toKey(''), ...ids]));
  }
  const result: RemovedJobs = { removed: 0, missing: 0, refused: [] };
  const left: string[] = [];
  for (const reply of await Promise.all(calls)) {
    const [removed, missing, ...ids] = reply as [number, number, ...string[]];
    result.removed += removed;
    result.missing += missing;
    left.push(...ids);
  }
  const codes = await Promise.all(left.map((id) => queue.remove(id)));
  codes.forEach((code, i) => {
    if (code === 1) result.removed++;
    else result.refused.push(left[i]!);
  });
  return result;
}
