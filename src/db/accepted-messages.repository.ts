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
  let inserted: AcceptedMessageRow | undefined;
  try {
    inserted = await insertAccepted(db, message);
  } catch (err) {
    // Two requests recording the same token at once, both past the arbiter check, insert the
    // same message_id: the loser trips the primary key (23505), not the (principal, token)
    // target that DO NOTHING covers. The winner's row is then the answer.
    if ((err as { code?: string }).code !== '23505') throw err;
  }
  if (inserted) return inserted;
  const existing = await findAcceptedByToken(db, message.principal, message.token);
  if (!existing) throw new Error(`accepted message for token vanished during insert`);
  return existing;
}

function insertAccepted(
  db: Kysely<Database>,
  message: AcceptedMessage,
): Promise<AcceptedMessageRow | undefined> {
  return db
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

/** The accepted message with this id, if any (the job status look-up). */
export async function findAcceptedByMessageId(
  db: Kysely<Database>,
  messageId: string,
): Promise<AcceptedMessageRow | undefined> {
  return db
    .selectFrom('accepted_messages')
    .selectAll()
    .where('message_id', '=', messageId)
    .executeTakeFirst();
}
