/**
 * The dedupe window's statements: the pruner's batch deletes and the pruning cutoff
 * (`prune_cutoff`), the largest message id whose inbox row may be gone.
 *
 * Every batch runs in a transaction that also raises the cutoff over what it deletes
 * ({@link advancePruneCutoff}), so no inbox row is ever gone without a committed cutoff at or
 * above its message: the message transaction checks the cutoff after its inbox insert (see
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

/** What one batch deleted. */
export interface PruneBatch {
  deleted: number;
  /** Accepted messages of the batch that were never applied, dead-lettered as `expired`. */
  expired?: number;
}

/**
 * Deletes up to `limit` accepted messages at or below `prunedThrough`; those without an inbox
 * row were never applied and are dead-lettered as `expired` in the same statement, so they are
 * not lost. Rows another session holds are skipped.
 */
export async function pruneAcceptedBatch(
  trx: Kysely<Database>,
  prunedThrough: string,
  limit: number,
): Promise<PruneBatch> {
  const { rows } = await sql<{ deleted: number; expired: number }>`
    with batch as (
      select * from accepted_messages where message_id <= ${prunedThrough}
      order by message_id limit ${limit} for update skip locked
    ), expired as (
      insert into dead_letters
        (message_id, queue, job_name, job_id, data, token, reason, error, attempts, options,
         enqueued_at)
      select b.message_id, b.queue, b.job_name, b.job_id, b.data, b.token, 'expired',
             'never applied within the dedupe window', 0, b.options, b.accepted_at
      from batch b
      where not exists (select 1 from inbox i where i.message_id = b.message_id)
      on conflict (message_id) do update
        set reason = 'expired', error = excluded.error, dead_at = now(),
            dead_count = dead_letters.dead_count + 1, replayed_at = null
        where dead_letters.replayed_at is not null and dead_letters.purged_at is null
      returning 1
    ), gone as (
      delete from accepted_messages a using batch b where a.message_id = b.message_id
      returning 1
    )
    select (select count(*) from gone)::int as deleted,
           (select count(*) from expired)::int as expired`.execute(trx);
  return rows[0]!;
}

/** Deletes up to `limit` inbox rows at or below `prunedThrough`; held rows are skipped. */
export async function pruneInboxBatch(
  trx: Kysely<Database>,
  prunedThrough: string,
  limit: number,
): Promise<PruneBatch> {
  const r = await sql`
    delete from inbox where message_id in (
      select message_id from inbox where message_id <= ${prunedThrough}
      order by message_id limit ${limit} for update skip locked)`.execute(trx);
  return { deleted: Number(r.numAffectedRows ?? 0) };
}

/** Deletes up to `limit` purged dead letters (tombstones) at or below `prunedThrough`. */
export async function pruneTombstoneBatch(
  trx: Kysely<Database>,
  prunedThrough: string,
  limit: number,
): Promise<PruneBatch> {
  const r = await sql`
    delete from dead_letters where message_id in (
      select message_id from dead_letters where message_id <= ${prunedThrough}
        and purged_at is not null
      order by message_id limit ${limit} for update skip locked)`.execute(trx);
  return { deleted: Number(r.numAffectedRows ?? 0) };
}
