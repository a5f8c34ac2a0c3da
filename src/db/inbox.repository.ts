/**
 * The inbox: one row per applied message, inserted as the first statement of the message's
 * transaction (see message-transaction.ts). Its primary key is the fence: a second transaction
 * for the same message either conflicts at once or waits on the uncommitted row and then
 * conflicts. Reads of it live here.
 */
import type { Kysely } from 'kysely';
import type { Database } from './database.js';

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
