/**
 * The inbox: one row per applied message, inserted as the first statement of the message's
 * transaction (see message-transaction.ts). Its primary key is the fence: a second transaction
 * for the same message either conflicts at once or waits on the uncommitted row and then
 * conflicts. Its reads, and the pruner's delete, live here.
 */
import { sql, type Kysely } from 'kysely';
import type { Database, InboxRow } from './database.js';

/** What the inbox holds of an applied message: the handler's result and when it committed. */
export type AppliedMessage = Pick<InboxRow, 'result' | 'applied_at'>;

/**
 * The inbox row of a message, or `undefined` when it was never applied (or its row was pruned):
 * the job status once BullMQ no longer has the job.
 */
export async function findApplied(
  db: Kysely<Database>,
  messageId: string,
): Promise<AppliedMessage | undefined> {
  return db
    .selectFrom('inbox')
    .select(['result', 'applied_at'])
    .where('message_id', '=', messageId)
    .executeTakeFirst();
}

/** Which of `messageIds` are applied (have an inbox row): replay sends the others only. */
export async function appliedMessageIds(
  db: Kysely<Database>,
  messageIds: readonly string[],
): Promise<Set<string>> {
  if (messageIds.length === 0) return new Set();
  const rows = await db
    .selectFrom('inbox')
    .select('message_id')
    .where('message_id', 'in', [...messageIds])
    .execute();
  return new Set(rows.map((r) => r.message_id));
}

/**
 * Deletes up to `limit` inbox rows at or below `prunedThrough`, oldest first; rows another
 * session holds are skipped, never waited for. Resolves to how many it deleted. Only the pruner
 * calls it, in a transaction that raises the pruning cutoff over them (pruning.repository.ts).
 */
export async function deleteInboxThrough(
  trx: Kysely<Database>,
  prunedThrough: string,
  limit: number,
): Promise<number> {
  const r = await sql`
    delete from inbox where message_id in (
      select message_id from inbox where message_id <= ${prunedThrough}
      order by message_id limit ${limit} for update skip locked)`.execute(trx);
  return Number(r.numAffectedRows ?? 0);
}
