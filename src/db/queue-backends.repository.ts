/**
 * The backend of each prefix (`queue_backends`, migration `2026_12_01_170000_queue_backends`):
 * recorded by the first process of a prefix, checked by every later one.
 */
import { sql } from 'kysely';
import type { Db } from './create-db.js';
import { ConfigError, ErrorCode, OnceqError } from '../core/errors.js';

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
  // One statement that always returns the row: on a conflict, the update locks it and returns
  // its committed kind (a plain DO NOTHING, with a select on the statement's own snapshot, would
  // find no row when another process inserted it concurrently, and let both modes pass).
  let rows: { kind: QueueBackendKind; recorded_at: Date }[];
  try {
    ({ rows } = await sql<{ kind: QueueBackendKind; recorded_at: Date }>`
      insert into queue_backends (prefix, kind) values (${prefix}, ${kind})
      on conflict (prefix) do update set prefix = excluded.prefix
      returning kind, recorded_at`.execute(db));
  } catch (err) {
    if ((err as { code?: string }).code === '42P01') {
      throw new OnceqError(
        ErrorCode.MigrationsPending,
        "onceq's tables are missing or out of date (no queue_backends): run the migrations " +
          '(`onceq migrate latest`, or migrateToLatest) first',
        { cause: err },
      );
    }
    throw err;
  }
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
