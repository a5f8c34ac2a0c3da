/**
 * The pruning cutoff (`prune_cutoff`): the largest message id whose inbox row may be gone. The
 * pruner's deletes live with the tables they delete from (inbox, accepted-messages and
 * dead-letters repositories).
 *
 * Every batch of the pruner runs in a transaction that also raises the cutoff over what it
 * deletes ({@link advancePruneCutoff}), so no inbox row is ever gone without a committed cutoff
 * at or above its message: the message transaction checks the cutoff after its inbox insert (see
 * message-transaction.ts), and that is what keeps a pruned message from being applied twice
 * whatever the worker's clock or dedupe-window setting says.
 */
import { sql, type Kysely } from 'kysely';
import type { Database } from './database.js';

/**
 * SQLSTATE raised by `onceq_assert_not_pruned` (migration `2026_12_01_100000_prune_cutoff`) for
 * a message at or below the cutoff.
 */
export const PRUNED_SQLSTATE = 'OQ410';

/** The cutoff now: every message id at or below it may have lost its inbox row. */
export async function readPruneCutoff(db: Kysely<Database>): Promise<string> {
  const row = await db
    .selectFrom('prune_cutoff')
    .select(sql<string>`pruned_through::text`.as('pruned_through'))
    .executeTakeFirstOrThrow();
  return row.pruned_through;
}

/**
 * Raises the cutoff to `prunedThrough` (never lowers it: a pruner with a longer window than an
 * earlier one cannot bring pruned messages back). Run it in the transaction of the deletes it
 * covers, after them, so the row lock is held only until their commit. Workers read the row
 * without locking it, so none waits on it.
 */
export async function advancePruneCutoff(
  trx: Kysely<Database>,
  prunedThrough: string,
): Promise<void> {
  await trx
    .updateTable('prune_cutoff')
    .set({ pruned_through: prunedThrough, advanced_at: sql<Date>`now()` })
    .where('pruned_through', '<', prunedThrough)
    .execute();
}
