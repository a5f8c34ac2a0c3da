/**
 * The {@link DeadLetterLookup} the job-status route uses for state `dead`, backed by the durable
 * dead-letter table.
 */
import type { Db } from '../db/create-db.js';
import { findDeadLetterStatus } from '../db/dead-letters.repository.js';
import type { DeadLetterInfo, DeadLetterLookup } from './job-status.js';

/** Pending and purged dead letters are `dead`; a replayed one is back on its queue. */
export function createDeadLetterLookup(db: Db): DeadLetterLookup {
  return {
    async find({ messageId }): Promise<DeadLetterInfo | undefined> {
      const row = await findDeadLetterStatus(db, messageId);
      if (!row || (row.replayed_at && !row.purged_at)) return undefined;
      return {
        reason: row.purged_at ? `${row.reason} (purged)` : row.reason,
        ...(row.error ? { error: row.error } : {}),
        deadAt: row.dead_at,
      };
    },
  };
}
