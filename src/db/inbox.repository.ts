/**
 * The inbox: one row per applied message, inserted as the first statement of the message's
 * transaction. Its primary key is the fence: a second transaction for the same message either
 * conflicts at once or waits on the uncommitted row and then conflicts.
 */
import type { Kysely } from 'kysely';
import type { Database } from './database.js';

/** Inserts the inbox row; false when the message was already applied (or is being applied). */
export async function insertInbox(
  trx: Kysely<Database>,
  row: { messageId: string; queue: string; jobName: string },
): Promise<boolean> {
  const inserted = await trx
    .insertInto('inbox')
    .values({ message_id: row.messageId, queue: row.queue, job_name: row.jobName, result: 'null' })
    .onConflict((oc) => oc.column('message_id').doNothing())
    .returning('message_id')
    .executeTakeFirst();
  return inserted !== undefined;
}

/** Stores the handler's result in the inbox row, within the same transaction. */
export async function setInboxResult(trx: Kysely<Database>, messageId: string, result: unknown): Promise<void> {
  await trx
    .updateTable('inbox')
    .set({ result: JSON.stringify(result ?? null) })
    .where('message_id', '=', messageId)
    .execute();
}

/** The stored result of an applied message, or `undefined` when the message is not in the inbox. */
export async function findInboxResult(
  db: Kysely<Database>,
  messageId: string,
): Promise<{ result: unknown } | undefined> {
  const row = await db
    .selectFrom('inbox')
    .select('result')
    .where('message_id', '=', messageId)
    .executeTakeFirst();
  return row ? { result: row.result } : undefined;
}
