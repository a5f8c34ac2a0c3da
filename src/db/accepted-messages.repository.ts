/**
 * Accepted messages: the durable record of every message a producer accepted, written before the
 * producer answers, so a Redis that loses its data never loses a message.
 */
import type { Kysely } from 'kysely';
import type { Database, AcceptedMessageRow } from './database.js';

/** What is recorded at acceptance. */
export interface AcceptedMessage {
  messageId: string;
  principal: string;
  token: string;
  fingerprint: string;
  queue: string;
  jobName: string;
  data: unknown;
  jobId: string;
  options: { delay?: number; priority?: number };
}

/**
 * Records the message; when `(principal, token)` is already recorded, returns that row instead
 * (the first acceptance wins, whatever message id a retry minted).
 */
export async function recordAccepted(
  db: Kysely<Database>,
  message: AcceptedMessage,
): Promise<AcceptedMessageRow> {
  const inserted = await db
    .insertInto('accepted_messages')
    .values({
      message_id: message.messageId,
      principal: message.principal,
      token: message.token,
      fingerprint: message.fingerprint,
      queue: message.queue,
      job_name: message.jobName,
      data: JSON.stringify(message.data),
      job_id: message.jobId,
      options: JSON.stringify(message.options),
    })
    .onConflict((oc) => oc.columns(['principal', 'token']).doNothing())
    .returningAll()
    .executeTakeFirst();
  if (inserted) return inserted;
  const existing = await findAcceptedByToken(db, message.principal, message.token);
  if (!existing) throw new Error(`accepted message for token vanished during insert`);
  return existing;
}

/** The accepted message of a principal's token, if any. */
export async function findAcceptedByToken(
  db: Kysely<Database>,
  principal: string,
  token: string,
): Promise<AcceptedMessageRow | undefined> {
  return db
    .selectFrom('accepted_messages')
    .selectAll()
    .where('principal', '=', principal)
    .where('token', '=', token)
    .executeTakeFirst();
}
