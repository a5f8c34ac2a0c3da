/**
 * Accepted messages: the durable record of every message a producer accepted, written before the
 * producer answers, so a Redis that loses its data never loses a message.
 */
import { sql, type Kysely } from 'kysely';
import { ErrorCode, OnceqError } from '../core/errors.js';
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
 * @throws OnceqError (`internal_error`) when the message id is taken by another request's row.
 */
export async function recordAccepted(
  db: Kysely<Database>,
  message: AcceptedMessage,
): Promise<AcceptedMessageRow> {
  let inserted: AcceptedMessageRow | undefined;
  try {
    inserted = await insertAccepted(db, message);
  } catch (err) {
    return answerFailedInsert(db, message, err);
  }
  if (inserted) return inserted;
  const existing = await findAcceptedByToken(db, message.principal, message.token);
  if (!existing) throw new Error(`accepted message for token vanished during insert`);
  return existing;
}

/**
 * The answer to a caller whose row, inserted alone, failed with `err`. Two requests recording the
 * same token at once, both past the arbiter check, insert the same message_id: the loser trips
 * the primary key (23505), not the token check that skips a recorded token, and the
 * winner's row is then the answer. A unique violation that leaves no row for the token is a
 * message id taken by another request (two snowflakes alike): answering with that row would hand
 * this caller someone else's message, so it is an error, and the API answers 5xx.
 */
async function answerFailedInsert(
  db: Kysely<Database>,
  message: AcceptedMessage,
  err: unknown,
): Promise<AcceptedMessageRow> {
  if ((err as { code?: string }).code !== '23505') throw err;
  const existing = await findAcceptedByToken(db, message.principal, message.token);
  if (existing) return existing;
  throw new OnceqError(
    ErrorCode.Internal,
    `message id ${message.messageId} is already recorded for another request`,
    {
      cause: err,
      details: {
        messageId: message.messageId,
        constraint: (err as { constraint?: string }).constraint,
      },
    },
  );
}

function insertAccepted(
  db: Kysely<Database>,
  message: AcceptedMessage,
): Promise<AcceptedMessageRow | undefined> {
  // No ON CONFLICT: the table is partitioned by message id, so no unique index on the parent can
  // hold (principal, token). The trigger `onceq_accepted_token_unique` (migration
  // 2026_12_01_180000_partition_by_day) skips a row whose token is recorded, after waiting for
  // any writer of the same token, which is what `ON CONFLICT (principal, token) DO NOTHING` did;
  // a primary-key clash still raises 23505.
  return db
    .insertInto('accepted_messages')
    .values(toRow(message))
    .returningAll()
    .executeTakeFirst();
}

function toRow(message: AcceptedMessage) {
  return {
    message_id: message.messageId,
    principal: message.principal,
    token: message.token,
    fingerprint: message.fingerprint,
    queue: message.queue,
    job_name: message.jobName,
    data: JSON.stringify(message.data),
    job_id: message.jobId,
    options: JSON.stringify(message.options),
  };
}

function compareTokenKeys(a: AcceptedMessage, b: AcceptedMessage): number {
  if (a.principal !== b.principal) return a.principal < b.principal ? -1 : 1;
  if (a.token === b.token) return 0;
  return a.token < b.token ? -1 : 1;
}

/** Most rows one batched INSERT carries (PostgreSQL allows 65,535 parameters; 9 per row). */
export const MAX_ACCEPT_BATCH = 500;

/**
 * INSERTs the acceptance writer keeps in flight at once. More than one, so that rows arriving
 * during a commit wait for a free slot rather than for the commit to finish; few, so that a busy
 * producer still sends large batches.
 */
export const DEFAULT_ACCEPT_CONCURRENCY = 3;

/**
 * What the acceptance writer answers: the identity of the first acceptance of a token. The
 * batched INSERT returns these columns only; reading back every row's data (jsonb) and
 * timestamps would cost PostgreSQL and the API for nothing.
 */
export type AcceptedRef = Pick<
  AcceptedMessageRow,
  'message_id' | 'principal' | 'token' | 'fingerprint'
>;

/** Records accepted messages, many concurrent callers to one statement. */
export interface AcceptanceWriter {
  /**
   * Same contract as {@link recordAccepted}; resolves once the row is committed, with the first
   * acceptance of the token (whose fingerprint may differ from this message's).
   */
  record(message: AcceptedMessage): Promise<AcceptedRef>;
}

/**
 * Group commit for acceptance. Under load the API answers many requests at once, and each must
 * have its row committed before it answers: one INSERT and one WAL flush per request makes
 * PostgreSQL the bottleneck. The writer sends the rows that arrived while the previous INSERT was
 * running as one multi-row INSERT, so a quiet producer pays one round trip as before and a busy
 * one pays one statement and one flush per batch. Each caller still gets its own row, and the
 * same conflict rules as {@link recordAccepted}: the first acceptance of a `(principal, token)` wins.
 */
export function createAcceptanceWriter(
  db: Kysely<Database>,
  maxBatch = MAX_ACCEPT_BATCH,
  maxConcurrent = DEFAULT_ACCEPT_CONCURRENCY,
): AcceptanceWriter {
  interface Pending {
    message: AcceptedMessage;
    resolve(row: AcceptedRef): void;
    reject(err: unknown): void;
  }
  let queue: Pending[] = [];
  let running = 0;

  async function flush(batch: Pending[]): Promise<void> {
    let rows: AcceptedRef[];
    try {
      // Rows in (principal, token) order: the trigger locks each token in turn until commit, and
      // two batches that lock two tokens in the same order cannot deadlock. The sort is stable,
      // so of two requests of one token in the batch the first to arrive is inserted first and
      // wins, as with ON CONFLICT DO NOTHING (see insertAccepted).
      const ordered = [...batch].sort((a, b) => compareTokenKeys(a.message, b.message));
      rows = await db
        .insertInto('accepted_messages')
        .values(ordered.map((p) => toRow(p.message)))
        .returning(['message_id', 'principal', 'token', 'fingerprint'])
        .execute();
    } catch (err) {
      // One statement fails for all its rows, whatever the cause: a primary-key clash (two
      // requests of one token racing across batches), one caller's data PostgreSQL refuses (a
      // \u0000 in jsonb, a value out of range), a deadlock with another batch. One row per
      // statement gives each caller its own outcome, so one bad request fails only itself.
      if (batch.length === 1) {
        const [p] = batch as [Pending];
        await answerFailedInsert(db, p.message, err).then(p.resolve, p.reject);
        return;
      }
      await Promise.all(batch.map((p) => recordAccepted(db, p.message).then(p.resolve, p.reject)));
      return;
    }
    const byKey = new Map(rows.map((r) => [`${r.principal}\u0000${r.token}`, r]));
    await Promise.all(
      batch.map(async (p) => {
        const { principal, token } = p.message;
        const row = byKey.get(`${principal}\u0000${token}`);
        // Inserted by this statement, for this caller or for a twin earlier in the batch: the
        // first acceptance either way. Absent: recorded before this statement.
        if (row) return p.resolve(row);
        try {
          const existing = await findAcceptedByToken(db, principal, token);
          if (!existing) throw new Error('accepted message for token vanished during insert');
          p.resolve(existing);
        } catch (err) {
          p.reject(err);
        }
      }),
    );
  }

  async function drain(): Promise<void> {
    running++;
    try {
      while (queue.length > 0) {
        const batch = queue.slice(0, maxBatch);
        queue = queue.slice(batch.length);
        await flush(batch);
      }
    } finally {
      running--;
    }
  }

  // A drain starts on the next turn of the event loop, not at the first record: the requests
  // that arrive in one turn (one read of many sockets) then share one INSERT instead of each
  // taking a free slot with a one-row statement.
  let scheduled = false;
  function startDrain(): void {
    scheduled = false;
    if (queue.length > 0 && running < maxConcurrent) void drain();
  }

  return {
    record(message) {
      return new Promise<AcceptedRef>((resolve, reject) => {
        queue.push({ message, resolve, reject });
        if (!scheduled && running < maxConcurrent) {
          scheduled = true;
          setImmediate(startDrain);
        }
      });
    },
  };
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

/**
 * Where an accepted message stands in PostgreSQL: `applied` (its inbox row exists), `dead` (a
 * dead letter that is pending or purged: the dead-letter queue and its operator own it), or
 * `open` (neither: queued, running, or its job lost). A dead letter that was replayed counts as
 * open: the replay put the message back on its queue. The same rule as the reconciler's.
 */
export type MessageFate = 'applied' | 'dead' | 'open';

/** The {@link MessageFate} of a message, in one round trip. */
export async function findMessageFate(
  db: Kysely<Database>,
  messageId: string,
): Promise<MessageFate> {
  const row = await db
    .selectNoFrom((eb) => [
      eb
        .exists(eb.selectFrom('inbox').select('message_id').where('message_id', '=', messageId))
        .as('applied'),
      eb
        .exists(
          eb
            .selectFrom('dead_letters')
            .select('message_id')
            .where('message_id', '=', messageId)
            .where((w) => w.or([w('replayed_at', 'is', null), w('purged_at', 'is not', null)])),
        )
        .as('dead'),
    ])
    .executeTakeFirstOrThrow();
  if (row.applied) return 'applied';
  return row.dead ? 'dead' : 'open';
}

/** The message-id range {@link listUnsettledAccepted} reads, and how many rows at most. */
export interface UnsettledRange {
  /** Lower bound of the range (the reconciler's low-water mark, or the last id of a batch). */
  from: string;
  /** Whether `from` itself is in the range (the first batch of a pass) or not (the next ones). */
  inclusive: boolean;
  /** Upper bound, excluded: the first id of the grace period. */
  upper: string;
  limit: number;
}

/**
 * Accepted messages of the range, oldest first, that are neither applied (no inbox row) nor
 * dead (no pending or purged dead letter): the reconciler's candidates. The same rule as
 * {@link findMessageFate}'s `open`.
 */
export async function listUnsettledAccepted(
  db: Kysely<Database>,
  range: UnsettledRange,
): Promise<AcceptedMessageRow[]> {
  const { rows } = await sql<AcceptedMessageRow>`
    select a.message_id::text as message_id, a.principal, a.token, a.fingerprint, a.queue,
           a.job_name, a.data, a.job_id, a.options, a.accepted_at
    from accepted_messages a
    where a.message_id ${range.inclusive ? sql`>=` : sql`>`} ${range.from}
      and a.message_id < ${range.upper}
      and not exists (select 1 from inbox i where i.message_id = a.message_id)
      and not exists (select 1 from dead_letters d where d.message_id = a.message_id
                        and (d.replayed_at is null or d.purged_at is not null))
    order by a.message_id
    limit ${range.limit}`.execute(db);
  return rows;
}

/**
 * Locks up to `limit` accepted messages at or below `prunedThrough`, oldest first, for the rest
 * of `trx`, and resolves to their ids; rows another session holds are skipped, never waited for.
 * The pruner's batch: it dead-letters the unapplied ones, then {@link deleteAccepted}s them all.
 */
export async function lockAcceptedThrough(
  trx: Kysely<Database>,
  prunedThrough: string,
  limit: number,
): Promise<string[]> {
  const rows = await trx
    .selectFrom('accepted_messages')
    .select('message_id')
    .where('message_id', '<=', prunedThrough)
    .orderBy('message_id')
    .limit(limit)
    .forUpdate()
    .skipLocked()
    .execute();
  return rows.map((r) => r.message_id);
}

/** Deletes these accepted messages; resolves to how many were there. */
export async function deleteAccepted(
  trx: Kysely<Database>,
  messageIds: readonly string[],
): Promise<number> {
  if (messageIds.length === 0) return 0;
  const r = await trx
    .deleteFrom('accepted_messages')
    .where('message_id', 'in', [...messageIds])
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}
