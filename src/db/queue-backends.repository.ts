/**
 * The backend of each prefix (`queue_backends`, migration `2026_12_01_170000_queue_backends`):
 * recorded by the first process of a prefix, checked by every later one.
 */
import { sql } from 'kysely';
import type { Db } from './create-db.js';
import { ConfigError } from '../core/errors.js';

/** Where a prefix's queues live. */
export type QueueBackendKind = 'redis' | 'postgres';

/**
 * Records `kind` for `prefix` if nothing is recorded, and throws a `ConfigError` when another
 * kind is: the process would run the prefix's queues in the other store.
 */
export async function assertQueueBackend(
  db: Db,
  prefix: string,
  kind: QueueBackendKind,
): Promise<void> {
  const { rows } = await sql<{ kind: QueueBackendKind; recorded_at: Date }>`
    with recorded as (
      insert into queue_backends (prefix, kind) values (${prefix}, ${kind})
      on conflict (prefix) do nothing
      returning kind, recorded_at
    )
    select kind, recorded_at from recorded
    union all
    select kind, recorded_at from queue_backends where prefix = ${prefix}
    limit 1`.execute(db);
  const recorded = rows[0];
  if (!recorded || recorded.kind === kind) return;
  const other = (k: QueueBackendKind) => (k === 'redis' ? 'Redis' : 'PostgreSQL alone');
  throw new ConfigError(
    [
      `prefix ${prefix} runs on ${other(recorded.kind)} (recorded ${recorded.recorded_at.toISOString()}), ` +
        `and this process would run it on ${other(kind)}: ` +
        (recorded.kind === 'redis'
          ? 'set REDIS_URL (library: the redis option) as the other processes do'
          : 'unset REDIS_URL (library: leave out the redis option) as the other processes do') +
        `; to move the prefix, drain its queues first, then delete its row: ` +
        `DELETE FROM queue_backends WHERE prefix = '${prefix}'`,
    ],
    { subject: 'backend for this prefix' },
  );
}
