/**
 * Fleet-wide mutual exclusion on PostgreSQL session advisory locks, for the background tasks
 * that run in one worker process at a time (the reconciler, the pruner).
 *
 * PostgreSQL rather than a Redis lease: the reconciler exists for the moment Redis loses its
 * data, and a lock kept in Redis would vanish with it, letting two reconcilers run. A session
 * lock also dies with its holder: a SIGKILLed process's connection closes and the lock is free.
 * The lock key is scoped to the schema, so deployments (and tests) sharing a server do not
 * exclude each other.
 */
import { sql } from 'kysely';
import type { Db } from './create-db.js';

/** Lock ids of onceq's singleton tasks (second half of the two-part advisory key). */
export const LockId = {
  Reconciler: 1,
  Pruner: 2,
  /**
   * Taken inside the database only: `onceq_ensure_partitions` (one creator at a time) and the
   * accepted_messages token trigger (shared by each writer, exclusive by a bulk one); listed so
   * that no task reuses them.
   */
  Partitions: 3,
  AcceptedTokens: 4,
} as const;
export type LockId = (typeof LockId)[keyof typeof LockId];

/**
 * Runs `body` while holding the lock, or returns `{ ran: false }` at once when another session
 * holds it. The lock is held on a connection of its own for the whole run; `body` uses the pool.
 */
export async function withAdvisoryLock<T>(
  db: Db,
  lock: LockId,
  body: () => Promise<T>,
): Promise<{ ran: true; value: T } | { ran: false }> {
  return db.connection().execute(async (conn) => {
    const { rows } = await sql<{ locked: boolean }>`
      select pg_try_advisory_lock(hashtext(current_schema()), ${lock}) as locked`.execute(conn);
    if (!rows[0]?.locked) return { ran: false } as const;
    try {
      return { ran: true, value: await body() } as const;
    } finally {
      // On a broken connection this fails too, and the session's end frees the lock.
      await sql`select pg_advisory_unlock(hashtext(current_schema()), ${lock})`
        .execute(conn)
        .catch(() => undefined);
    }
  });
}
