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
import type { MessageTrace } from '../core/message.js';

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
  /** Job options, and the trace context of the `ctx.enqueue` that wrote it (the relay passes it on). */
  options: { delay?: number; priority?: number; trace?: MessageTrace };
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

/** An outbox row as the relay sends it. */
export type PendingFollowUp = Omit<OutboxRow, 'quarantined_at' | 'error'>;

/** What {@link takeOutboxBatch} took. */
export interface OutboxBatch {
  /** Rows now recorded as accepted messages and gone from the outbox: add their jobs. */
  rows: PendingFollowUp[];
  /**
   * Rows whose message id already belongs to another accepted message (an id minted twice),
   * now quarantined in the outbox with `error` set; never sent.
   */
  clashes: IdClashError | undefined;
}

const CLASH_ERROR =
  'id clash: this message id already belongs to another accepted message; not sent';

/**
 * Takes up to `limit` committed, unquarantined outbox rows in `trx`: records each as an accepted
 * message (fingerprint `outbox:<parent messageId>`) and deletes it, in one statement. Rows another
 * relay holds are skipped. Nothing is final until `trx` commits: the caller adds the jobs to
 * BullMQ first, so a relay that dies in between leaves the rows to be sent again (a duplicate
 * job id, or a delivery the inbox absorbs), never lost.
 *
 * A row whose message id already belongs to an accepted message (two messages were given one
 * id), or whose token does (the table's token trigger skips it: with 192 random bits, as likely
 * as an id minted twice), is not recorded, not sent and not deleted: it is quarantined in place (`quarantined_at`,
 * `error`) and reported as an {@link IdClashError} for the caller to raise loudly. Sending it
 * would let BullMQ drop it as a duplicate job id; failing the whole batch would stop every
 * follow-up behind it at every run.
 */
export async function takeOutboxBatch(trx: Kysely<Database>, limit: number): Promise<OutboxBatch> {
  const { rows } = await sql<PendingFollowUp & { recorded: boolean }>`
    with batch as (
      select * from outbox where quarantined_at is null
      order by message_id limit ${limit} for update skip locked
    ), accepted as (
      insert into accepted_messages
        (message_id, principal, token, fingerprint, queue, job_name, data, job_id, options, accepted_at)
      select message_id, ${OUTBOX_PRINCIPAL}, token, 'outbox:' || parent_message_id::text, queue,
             job_name, data, ${JOB_ID_PREFIX} || message_id::text, options, created_at
      from batch
      on conflict (message_id) do nothing
      returning message_id
    ), moved as (
      delete from outbox where message_id in (select message_id from accepted)
      returning message_id
    ), quarantined as (
      update outbox set quarantined_at = now(), error = ${CLASH_ERROR}
      where message_id in (select message_id from batch)
        and message_id not in (select message_id from accepted)
      returning message_id
    )
    select message_id::text as message_id, parent_message_id::text as parent_message_id, queue,
           job_name, data, token, options, created_at,
           exists (select 1 from moved where moved.message_id = batch.message_id) as recorded
    from batch
    where exists (select 1 from moved where moved.message_id = batch.message_id)
       or exists (select 1 from quarantined where quarantined.message_id = batch.message_id)
    order by message_id`.execute(trx);
  const clashing = rows.filter((row) => !row.recorded).map((row) => row.message_id);
  return {
    rows: rows.filter((row) => row.recorded).map(({ recorded: _recorded, ...row }) => row),
    clashes:
      clashing.length === 0
        ? undefined
        : new IdClashError(
            `outbox message id${clashing.length > 1 ? 's' : ''} ${clashing.join(', ')} already ` +
              'belong to accepted messages: an id was minted twice; those follow-ups are ' +
              'quarantined in the outbox and not sent',
            clashing,
          ),
  };
}

/** Quarantined outbox rows (an id clash), oldest first: for the operator and the tests. */
export async function quarantinedFollowUps(
  db: Kysely<Database>,
): Promise<{ message_id: string; error: string | null; quarantined_at: Date | null }[]> {
  return db
    .selectFrom('outbox')
    .select(['message_id', 'error', 'quarantined_at'])
    .where('quarantined_at', 'is not', null)
    .orderBy('message_id')
    .execute();
}

/** How far behind the relay is: rows waiting and the oldest one's message id. */
export interface OutboxBacklog {
  depth: number;
  /** `undefined` when the outbox is empty. */
  oldestMessageId: string | undefined;
}

/** The {@link OutboxBacklog}, in one query (the metrics scrape, tests). */
export async function outboxBacklog(db: Kysely<Database>): Promise<OutboxBacklog> {
  const { rows } = await sql<{ oldest: string | null; n: string }>`
    select min(message_id)::text as oldest, count(*)::text as n from outbox`.execute(db);
  const row = rows[0];
  return { depth: Number(row?.n ?? 0), oldestMessageId: row?.oldest ?? undefined };
}
