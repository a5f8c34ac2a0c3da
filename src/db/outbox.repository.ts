/**
 * The transactional outbox (DESIGN.md section 6): handlers write follow-up messages here inside
 * their own transaction; the relay takes committed rows, records them as accepted messages (so
 * the reconciler covers them like any message the API accepted) and deletes them.
 */
import { sql, type Kysely } from 'kysely';
import type { Database, OutboxRow } from './database.js';
import { JOB_ID_PREFIX } from '../core/message.js';
import { IdClashError } from '../core/errors.js';
import { OUTBOX_PRINCIPAL } from '../core/principals.js';

/** Principal of accepted messages that came from the outbox (reserved: see core/principals.ts). */
export { OUTBOX_PRINCIPAL };

/** A follow-up message. */
export interface FollowUp {
  messageId: string;
  parentMessageId: string;
  queue: string;
  jobName: string;
  data: unknown;
  token: string;
  options: { delay?: number; priority?: number };
}

/** Writes a follow-up; `trx` must be the parent message's transaction. */
export async function insertOutbox(trx: Kysely<Database>, followUp: FollowUp): Promise<void> {
  await trx
    .insertInto('outbox')
    .values({
      message_id: followUp.messageId,
      parent_message_id: followUp.parentMessageId,
      queue: followUp.queue,
      job_name: followUp.jobName,
      data: JSON.stringify(followUp.data ?? null),
      token: followUp.token,
      options: JSON.stringify(followUp.options),
    })
    .execute();
}

/**
 * Takes up to `limit` committed outbox rows in `trx`: deletes them and records each as an
 * accepted message (fingerprint `outbox:<parent messageId>`), in one statement. Rows another
 * relay holds are skipped. Nothing is final until `trx` commits: the caller adds the jobs to
 * BullMQ first, so a relay that dies in between leaves the rows to be sent again (a duplicate
 * job id, or a delivery the inbox absorbs), never lost.
 * @throws IdClashError when a row's message id is already an accepted message's: two messages
 * were given one id. The batch rolls back with it, so nothing is dropped silently (recording it
 * with `on conflict do nothing` and sending it would let BullMQ drop it as a duplicate job id).
 */
export async function takeOutboxBatch(trx: Kysely<Database>, limit: number): Promise<OutboxRow[]> {
  const { rows } = await sql<OutboxRow & { recorded: boolean }>`
    with moved as (
      delete from outbox
      where message_id in (
        select message_id from outbox order by message_id limit ${limit} for update skip locked)
      returning *
    ), accepted as (
      insert into accepted_messages
        (message_id, principal, token, fingerprint, queue, job_name, data, job_id, options, accepted_at)
      select message_id, ${OUTBOX_PRINCIPAL}, token, 'outbox:' || parent_message_id::text, queue,
             job_name, data, ${JOB_ID_PREFIX} || message_id::text, options, created_at
      from moved
      on conflict (message_id) do nothing
      returning message_id
    )
    select message_id::text as message_id, parent_message_id::text as parent_message_id, queue,
           job_name, data, token, options, created_at,
           exists (select 1 from accepted where accepted.message_id = moved.message_id) as recorded
    from moved order by message_id`.execute(trx);
  const clashing = rows.filter((row) => !row.recorded).map((row) => row.message_id);
  if (clashing.length > 0) {
    throw new IdClashError(
      `outbox message id${clashing.length > 1 ? 's' : ''} ${clashing.join(', ')} already ` +
        'belong to accepted messages: an id was minted twice; the follow-ups are not sent',
      clashing,
    );
  }
  return rows.map(({ recorded: _recorded, ...row }) => row);
}

/** Rows waiting in the outbox (metrics, tests). */
export async function outboxDepth(db: Kysely<Database>): Promise<number> {
  const row = await db
    .selectFrom('outbox')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
