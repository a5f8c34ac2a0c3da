/**
 * The durable dead-letter queue: reads and writes of `dead_letters`. A row is pending until a
 * replay marks it (`replayed_at`) or an operator purges it (`purged_at`); both are kept, so that
 * replays stay idempotent and the reconciler does not resurrect a message an operator gave up.
 */
import { sql, type Kysely, type OnConflictBuilder } from 'kysely';
import type { Database, DeadLetterRow } from './database.js';
import type { DeadLetterReason } from '../core/dead-letter.js';

/** What a dead letter records about a message when it goes dead. */
export interface DeadLetter {
  messageId: string;
  queue: string;
  jobName: string;
  jobId: string;
  data: unknown;
  token: string | null;
  reason: DeadLetterReason;
  error: string | null;
  stack: string | null;
  attempts: number;
  /** Job options a replay keeps (`{priority}`). */
  options: Record<string, unknown>;
  enqueuedAt: Date | null;
}

/** Longest error text and stack kept; the rest of a runaway message is cut. */
const MAX_ERROR_CHARS = 8_192;

/**
 * The one conflict rule of `dead_letters`, for every insert into it: the conflict target is the
 * message (one row per message, whatever its deaths), and a later death replaces the letter: it
 * takes the new death's columns, counts it (`dead_count`), and is pending again (neither replayed
 * nor purged). `enqueued_at` stays the first one recorded. Writers differ only in which rows a
 * later death may replace (see {@link upsertDeadLetter} and {@link expireUnapplied}).
 */
function onDeadLetterConflict(oc: OnConflictBuilder<Database, 'dead_letters'>) {
  return oc.column('message_id').doUpdateSet((eb) => ({
    queue: eb.ref('excluded.queue'),
    job_name: eb.ref('excluded.job_name'),
    job_id: eb.ref('excluded.job_id'),
    data: eb.ref('excluded.data'),
    token: eb.ref('excluded.token'),
    reason: eb.ref('excluded.reason'),
    error: eb.ref('excluded.error'),
    stack: eb.ref('excluded.stack'),
    attempts: eb.ref('excluded.attempts'),
    options: eb.ref('excluded.options'),
    dead_at: sql<Date>`now()`,
    dead_count: sql<number>`dead_letters.dead_count + 1`,
    replayed_at: null,
    purged_at: null,
  }));
}

/**
 * Records a dead letter. The same message again replaces its one row, whatever state it is in
 * ({@link onDeadLetterConflict}): a crash between the copy and the removal moves it twice and it
 * is counted twice; a replay that failed again makes it pending again; a job that went dead
 * after an operator purged its letter is dead again, not hidden by the tombstone.
 */
export async function upsertDeadLetter(db: Kysely<Database>, letter: DeadLetter): Promise<void> {
  await db
    .insertInto('dead_letters')
    .values({
      message_id: letter.messageId,
      queue: letter.queue,
      job_name: letter.jobName,
      job_id: letter.jobId,
      data: JSON.stringify(letter.data ?? null),
      token: letter.token,
      reason: letter.reason,
      error: cut(letter.error),
      stack: cut(letter.stack),
      attempts: letter.attempts,
      options: JSON.stringify(letter.options),
      enqueued_at: letter.enqueuedAt,
    })
    .onConflict(onDeadLetterConflict)
    .execute();
}

/** The error of a letter {@link expireUnapplied} writes. */
export const EXPIRED_UNAPPLIED_ERROR = 'never applied within the dedupe window';

/** Message ids from `from` (none: no lower bound) up to `below`, excluded: one partition's range. */
export interface MessageIdRange {
  from?: string;
  below: string;
}

/**
 * Dead-letters as `expired` those of the accepted messages `messageIds` (a list, or a range: a
 * partition the pruner drops whole) that have no inbox row
 * (never applied): the pruner calls it, in its batch's transaction, before it deletes them, so
 * that no accepted message is lost. Resolves to how many letters it wrote.
 *
 * Same conflict rule as every writer ({@link onDeadLetterConflict}), but an expiry replaces only a
 * letter that was replayed (its message went back to its queue and was never applied): a pending
 * letter already says why its message is dead, and a purged one is a tombstone the operator left;
 * the pruner deletes the message under both, so neither must turn into an expiry. A death a
 * worker saw, by contrast, is news in every state, which is why {@link upsertDeadLetter} has no
 * such guard.
 */
export async function expireUnapplied(
  trx: Kysely<Database>,
  messageIds: readonly string[] | MessageIdRange,
): Promise<number> {
  if (Array.isArray(messageIds) && messageIds.length === 0) return 0;
  const written = await trx
    .insertInto('dead_letters')
    .columns([
      'message_id',
      'queue',
      'job_name',
      'job_id',
      'data',
      'token',
      'reason',
      'error',
      'attempts',
      'options',
      'enqueued_at',
    ])
    .expression((eb) =>
      eb
        .selectFrom('accepted_messages as a')
        .select([
          'a.message_id',
          'a.queue',
          'a.job_name',
          'a.job_id',
          'a.data',
          'a.token',
          sql.lit('expired').as('reason'),
          sql.lit(EXPIRED_UNAPPLIED_ERROR).as('error'),
          sql.lit(0).as('attempts'),
          'a.options',
          'a.accepted_at',
        ])
        .where((w) => {
          if (Array.isArray(messageIds)) return w('a.message_id', 'in', [...messageIds]);
          const range = messageIds as MessageIdRange;
          const below = w('a.message_id', '<', range.below);
          return range.from === undefined
            ? below
            : w.and([w('a.message_id', '>=', range.from), below]);
        })
        .where(({ not, exists, selectFrom }) =>
          not(
            exists(
              selectFrom('inbox as i')
                .select('i.message_id')
                .whereRef('i.message_id', '=', 'a.message_id'),
            ),
          ),
        ),
    )
    .onConflict((oc) =>
      onDeadLetterConflict(oc)
        .where('dead_letters.replayed_at', 'is not', null)
        .where('dead_letters.purged_at', 'is', null),
    )
    .executeTakeFirst();
  return Number(written.numInsertedOrUpdatedRows ?? 0n);
}

function cut(text: string | null): string | null {
  return text && text.length > MAX_ERROR_CHARS ? `${text.slice(0, MAX_ERROR_CHARS)}…` : text;
}

/** The dead letter of a message (pending, replayed or purged), if any. */
export async function findDeadLetter(
  db: Kysely<Database>,
  messageId: string,
): Promise<DeadLetterRow | undefined> {
  return db
    .selectFrom('dead_letters')
    .selectAll()
    .where('message_id', '=', messageId)
    .executeTakeFirst();
}

/** The columns of a dead letter that say whether, and why, its message is dead. */
export type DeadLetterStatus = Pick<
  DeadLetterRow,
  'reason' | 'error' | 'dead_at' | 'replayed_at' | 'purged_at'
>;

/**
 * {@link findDeadLetter} without the data and stack (up to 8 KiB each) that a status look-up does
 * not show: the job-status route reads this on every look-up of a failed or vanished job.
 */
export async function findDeadLetterStatus(
  db: Kysely<Database>,
  messageId: string,
): Promise<DeadLetterStatus | undefined> {
  return db
    .selectFrom('dead_letters')
    .select(['reason', 'error', 'dead_at', 'replayed_at', 'purged_at'])
    .where('message_id', '=', messageId)
    .executeTakeFirst();
}

/** Which of `messageIds` have a dead letter (in any state). */
export async function existingDeadLetterIds(
  db: Kysely<Database>,
  messageIds: readonly string[],
): Promise<Set<string>> {
  if (messageIds.length === 0) return new Set();
  const rows = await db
    .selectFrom('dead_letters')
    .select('message_id')
    .where('message_id', 'in', [...messageIds])
    .execute();
  return new Set(rows.map((r) => r.message_id));
}

/** Filters of {@link listDeadLetters}. */
export interface DeadLetterFilter {
  queue?: string;
  reason?: DeadLetterReason;
  /** Only messages with a larger id (keyset pagination). */
  afterMessageId?: string;
  /** @defaultValue 100 */
  limit?: number;
  /** Replayed and purged letters too. @defaultValue false */
  includeSettled?: boolean;
}

/** Dead letters in message-id order (oldest message first). */
export async function listDeadLetters(
  db: Kysely<Database>,
  filter: DeadLetterFilter = {},
): Promise<DeadLetterRow[]> {
  let query = db
    .selectFrom('dead_letters')
    .selectAll()
    .orderBy('message_id')
    .limit(filter.limit ?? 100);
  if (!filter.includeSettled) {
    query = query.where('replayed_at', 'is', null).where('purged_at', 'is', null);
  }
  if (filter.queue) query = query.where('queue', '=', filter.queue);
  if (filter.reason) query = query.where('reason', '=', filter.reason);
  if (filter.afterMessageId) query = query.where('message_id', '>', filter.afterMessageId);
  return query.execute();
}

/** Pending dead letters, counted per queue and reason. */
export async function countPendingDeadLetters(
  db: Kysely<Database>,
): Promise<{ queue: string; reason: DeadLetterReason; count: number }[]> {
  const rows = await db
    .selectFrom('dead_letters')
    .select(['queue', 'reason', (eb) => eb.fn.countAll<string>().as('n')])
    .where('replayed_at', 'is', null)
    .where('purged_at', 'is', null)
    .groupBy(['queue', 'reason'])
    .orderBy('queue')
    .orderBy('reason')
    .execute();
  return rows.map((r) => ({ queue: r.queue, reason: r.reason, count: Number(r.n) }));
}

/** What {@link claimForReplay} selects. */
export interface ReplayClaim {
  /** Exactly these messages (already known to exist); otherwise every pending one. */
  messageIds?: readonly string[];
  queue?: string;
  reason?: DeadLetterReason;
  /** Only messages with a larger id (keyset pagination of `--all`). */
  afterMessageId?: string;
  /** Only messages minted at or after this id (younger than the dedupe window). */
  minMessageId: string;
  limit: number;
}

/** The columns of a letter that replay needs, all {@link claimForReplay} returns. */
export const REPLAY_COLUMNS = [
  'message_id',
  'queue',
  'job_name',
  'job_id',
  'data',
  'token',
  'options',
] as const;

/** A claimed letter: what it takes to put its message back on its queue. */
export type ReplayLetter = Pick<DeadLetterRow, (typeof REPLAY_COLUMNS)[number]>;

/**
 * Marks up to `limit` pending dead letters replayed and returns them (without their error and
 * stack, up to 8 KiB each, which replay does not need). This is what makes concurrent replays
 * safe to run: each pending row is handed to exactly one caller (rows another replay holds are
 * skipped, not waited for), and the mark is written before the job is added, so a replay that
 * dies after it leaves a message the reconciler re-enqueues, and a replayed job that goes dead
 * again makes its row pending again rather than being hidden by a late mark.
 *
 * The letters come back in message-id order, so the last one is where the next claim starts:
 * `UPDATE … RETURNING` promises no order, and a claim started from a smaller id would take a
 * letter handed back in the meantime (one BullMQ refused) a second time in the same run.
 */
export async function claimForReplay(
  db: Kysely<Database>,
  claim: ReplayClaim,
): Promise<ReplayLetter[]> {
  const claimed = await db
    .updateTable('dead_letters')
    .set({ replayed_at: sql<Date>`now()`, replay_count: sql<number>`replay_count + 1` })
    .where('message_id', 'in', (eb) => {
      let inner = eb
        .selectFrom('dead_letters')
        .select('message_id')
        .where('replayed_at', 'is', null)
        .where('purged_at', 'is', null)
        .where('message_id', '>=', claim.minMessageId)
        .orderBy('message_id')
        .limit(claim.limit)
        .forUpdate()
        .skipLocked();
      if (claim.messageIds) inner = inner.where('message_id', 'in', [...claim.messageIds]);
      if (claim.queue) inner = inner.where('queue', '=', claim.queue);
      if (claim.reason) inner = inner.where('reason', '=', claim.reason);
      if (claim.afterMessageId) inner = inner.where('message_id', '>', claim.afterMessageId);
      return inner;
    })
    .returning(REPLAY_COLUMNS)
    .execute();
  return claimed.sort((a, b) => compareIds(a.message_id, b.message_id));
}

/** Orders decimal snowflake ids numerically (as strings, `"9" > "10"`). */
function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/**
 * Hands claimed letters back: pending again, their replay uncounted. For letters a replay
 * claimed but could not send (BullMQ refused the job, or Redis was away), so a later replay can.
 */
export async function unclaimReplayed(
  db: Kysely<Database>,
  messageIds: readonly string[],
): Promise<void> {
  if (messageIds.length === 0) return;
  await sql`
    update dead_letters set replayed_at = null, replay_count = replay_count - 1
    where message_id = any(${[...messageIds]}::bigint[])`.execute(db);
}

/** Filters of the pending-letter reads of replay ({@link listPendingIdsBelow}, {@link countPendingFrom}). */
export interface PendingFilter {
  /** Only these messages. */
  messageIds?: readonly string[];
  queue?: string;
  reason?: DeadLetterReason;
}

/**
 * Ids of pending letters (matching the filter) of messages minted before `maxMessageId`,
 * excluded: the ones older than the dedupe window, which replay refuses.
 */
export async function listPendingIdsBelow(
  db: Kysely<Database>,
  maxMessageId: string,
  filter: PendingFilter = {},
): Promise<string[]> {
  let query = db
    .selectFrom('dead_letters')
    .select('message_id')
    .where('replayed_at', 'is', null)
    .where('purged_at', 'is', null)
    .where('message_id', '<', maxMessageId);
  if (filter.messageIds) query = query.where('message_id', 'in', [...filter.messageIds]);
  if (filter.queue) query = query.where('queue', '=', filter.queue);
  if (filter.reason) query = query.where('reason', '=', filter.reason);
  return (await query.execute()).map((r) => r.message_id);
}

/** How many pending letters (matching the filter) are of messages minted at or after `minMessageId`. */
export async function countPendingFrom(
  db: Kysely<Database>,
  minMessageId: string,
  filter: PendingFilter = {},
): Promise<number> {
  let query = db
    .selectFrom('dead_letters')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('replayed_at', 'is', null)
    .where('purged_at', 'is', null)
    .where('message_id', '>=', minMessageId);
  if (filter.messageIds) query = query.where('message_id', 'in', [...filter.messageIds]);
  if (filter.queue) query = query.where('queue', '=', filter.queue);
  if (filter.reason) query = query.where('reason', '=', filter.reason);
  return Number((await query.executeTakeFirstOrThrow()).n);
}

/** Filters of {@link purgeDeadLetters}. */
export interface PurgeFilter {
  /** Only letters that went dead before this time. */
  deadBefore?: Date;
  queue?: string;
  reason?: DeadLetterReason;
  limit: number;
}

/**
 * Purges up to `limit` dead letters (pending or replayed): clears their data and marks them
 * purged. The row stays as a tombstone so the reconciler leaves the message alone; the pruner
 * deletes it once it is older than the dedupe window.
 */
export async function purgeDeadLetters(
  db: Kysely<Database>,
  filter: PurgeFilter,
): Promise<{ message_id: string; queue: string; job_id: string }[]> {
  return db
    .updateTable('dead_letters')
    .set({ purged_at: sql<Date>`now()`, data: 'null', stack: null })
    .where('message_id', 'in', (eb) => {
      let inner = eb
        .selectFrom('dead_letters')
        .select('message_id')
        .where('purged_at', 'is', null)
        .orderBy('message_id')
        .limit(filter.limit)
        .forUpdate()
        .skipLocked();
      if (filter.deadBefore) inner = inner.where('dead_at', '<', filter.deadBefore);
      if (filter.queue) inner = inner.where('queue', '=', filter.queue);
      if (filter.reason) inner = inner.where('reason', '=', filter.reason);
      return inner;
    })
    .returning(['message_id', 'queue', 'job_id'])
    .execute();
}

/**
 * Deletes up to `limit` purged dead letters (tombstones) at or below `prunedThrough`: older than
 * the dedupe window, their message can no longer come back for the reconciler to leave alone.
 * Resolves to how many it deleted.
 */
export async function deletePurgedThrough(
  trx: Kysely<Database>,
  prunedThrough: string,
  limit: number,
): Promise<number> {
  const r = await sql`
    delete from dead_letters where message_id in (
      select message_id from dead_letters where message_id <= ${prunedThrough}
        and purged_at is not null
      order by message_id limit ${limit} for update skip locked)`.execute(trx);
  return Number(r.numAffectedRows ?? 0);
}
