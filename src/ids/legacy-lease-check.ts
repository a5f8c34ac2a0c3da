/**
 * The upgrade guard of the move of worker-id leases from Redis to PostgreSQL. Processes of the
 * previous version lease their worker ids in a Redis hash and cannot see the PostgreSQL leases;
 * a new process beside them could lease the same worker id and mint the same message ids. So a
 * process that mints ids refuses to start while that hash still holds a live lease. Once every
 * old process is gone (their leases expire within a ttl of their last heartbeat) it starts.
 */
import type { Cluster, Redis } from 'ioredis';
import { ErrorCode, OnceqError } from '../core/errors.js';

/** The hash the previous version leased worker ids in: field = id, value = `owner|expiresAtMs`. */
export function legacyWorkerIdsKey(prefix: string): string {
  return `${prefix}:~worker-ids`;
}

/**
 * Throws when a process of the previous version still holds a worker-id lease in Redis (judged
 * on Redis's clock, as those leases were).
 */
export async function assertNoLegacyWorkerIdLeases(
  redis: Redis | Cluster,
  prefix: string,
): Promise<void> {
  const key = legacyWorkerIdsKey(prefix);
  const [fields, [seconds, micros]] = await Promise.all([redis.hgetall(key), redis.time()]);
  const nowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  const live = Object.entries(fields)
    .filter(([field]) => /^\d+$/.test(field))
    .filter(([, value]) => {
      const match = /^(.+)\|(\d+)$/.exec(value);
      return match !== null && Number(match[2]) > nowMs;
    })
    .map(([field]) => field);
  if (live.length > 0) {
    throw new OnceqError(
      ErrorCode.WorkerIdUnavailable,
      `processes of an older onceq still lease worker id${live.length > 1 ? 's' : ''} ` +
        `${live.join(', ')} in Redis (${key}); this version leases them in PostgreSQL, and ` +
        'both side by side could mint the same message id: stop every process of the older ' +
        'version, then start this one (their leases expire 30 s after their last heartbeat)',
    );
  }
}
