/**
 * Dead-letter replay (DESIGN.md section 5): puts messages back on their original queue with the
 * same messageId and token and a fresh attempt budget. Batch-oriented: per batch, one UPDATE
 * claims up to a thousand pending letters; then, at the same time, one SELECT finds those already
 * applied and one script call per queue and 500 jobs removes their stale jobs (the visible copy in
 * `<queue>.dlq`, an original left by an interrupted move: see `removeJobs`); the jobs then go to
 * BullMQ in one `addBulk` per queue. Up to two batches are being sent while the next is claimed.
 * A replay killed midway loses nothing: a claimed letter whose job was not added yet is marked
 * replayed with no inbox row and no job, which is what the reconciler re-enqueues; the window only
 * bounds how many letters wait for it.
 *
 * Why it is safe to run twice at once, or many times: a letter is claimed (marked replayed) by
 * exactly one replay, in an UPDATE that skips rows another replay holds; the job is added under
 * the message's own job id, so a job still present is not duplicated; and whatever is delivered
 * twice anyway is fenced by the inbox. A message whose effect already committed is not sent
 * again: it is counted as already applied. Replay needs nothing from Redis: the token's state
 * there may be `done`, claimed by a dead worker, or gone, and the pipeline handles each.
 */
import type { Db } from '../db/create-db.js';
import {
  claimForReplay,
  countPendingFrom,
  existingDeadLetterIds,
  listDeadLetters,
  listPendingIdsBelow,
  unclaimReplayed,
  type ReplayLetter,
} from '../db/dead-letters.repository.js';
import { appliedMessageIds } from '../db/inbox.repository.js';
import { ErrorCode, OnceqError } from '../core/errors.js';
import { isSnowflake, firstSnowflakeAt, ONCEQ_EPOCH_MS } from '../core/snowflake.js';
import { deadLetterQueueName, type DeadLetterReason } from '../core/dead-letter.js';
import { jobIdFor } from '../core/message.js';
import { generateToken } from '../core/token.js';
import { storedJobOptions } from '../queues/message-job-options.js';
import { createQueueCache, type QueueCache } from '../queues/queue-cache.js';
import { addMessageJobs } from '../queues/add-message-jobs.js';
import { jobOf } from '../queues/message-job.js';
import { DEFAULT_DEDUPE_WINDOW_MS } from '../core/defaults.js';
import type { Backend } from '../queues/backend.js';
import type { QueuePartitions } from '../core/queue-partitions.js';

/** Letters per batch. */
export const DEFAULT_REPLAY_BATCH = 1_000;

/** Batches being sent at once while the next one is claimed. */
export const DEFAULT_REPLAY_BATCHES_IN_FLIGHT = 2;

/** Some ids given to replay have no dead letter; nothing was replayed. */
export class UnknownDeadLettersError extends OnceqError {
  declare readonly details: { unknown: string[] };
  constructor(unknown: string[]) {
    const shown = unknown.slice(0, 20).join(', ');
    const more = unknown.length > 20 ? ` and ${unknown.length - 20} more` : '';
    super(
      ErrorCode.NotFound,
      `no dead letter for ${unknown.length === 1 ? 'message' : 'messages'} ${shown}${more}; ` +
        'nothing was replayed',
      { details: { unknown } },
    );
  }
}

/** Options of {@link replayDeadLetters}. */
export interface ReplayOptions {
  db: Db;
  /** Where the queues live (not closed here). */
  backend: Backend;
  /**
   * Partition counts of the queues (the job registry's `partitions()`): a letter goes back to
   * its partition of its queue, where it ran. @defaultValue every queue unpartitioned
   */
  partitions?: QueuePartitions;
  /** These messages (all must have a dead letter); otherwise every pending letter. */
  messageIds?: readonly string[];
  queue?: string;
  reason?: DeadLetterReason;
  /** Count what would happen; change nothing. */
  dryRun?: boolean;
  /** Letters of older messages are not replayed (the pipeline would expire them). @defaultValue 7 d */
  dedupeWindowMs?: number;
  /** Attempt budget of the replayed jobs. @defaultValue 10 */
  maxAttempts?: number;
  backoffMs?: number;
  /** @defaultValue {@link DEFAULT_REPLAY_BATCH} */
  batchSize?: number;
  /** @defaultValue {@link DEFAULT_REPLAY_BATCHES_IN_FLIGHT} */
  batchesInFlight?: number;
  /** Called after each batch with the letters handled so far and the total expected. */
  onProgress?: (done: number, total: number) => void;
}

/** What a replay did. */
export interface ReplaySummary {
  dryRun: boolean;
  /** Letters considered. */
  total: number;
  /** Back on their queue. */
  replayed: number;
  /** Their effect had committed: not sent again. */
  alreadyApplied: number;
  /** Not replayed, each with a reason (see `failures`). */
  failed: number;
  /** Given by id but not pending (replayed or purged before, or being replayed by another run). */
  skipped: number;
  failures: { messageId: string; error: string }[];
}

/** Replays dead letters; see the module comment. */
export async function replayDeadLetters(options: ReplayOptions): Promise<ReplaySummary> {
  const batchSize = options.batchSize ?? DEFAULT_REPLAY_BATCH;
  const windowMs = options.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS;
  const minMessageId = firstSnowflakeAt(Math.max(ONCEQ_EPOCH_MS, Date.now() - windowMs));
  const explicit = options.messageIds ? [...new Set(options.messageIds)] : undefined;
  if (explicit) {
    const known = await existingDeadLetterIds(
      options.db,
      explicit.filter((id) => isSnowflake(id)),
    );
    // In the order given, so the operator finds them in the command line.
    const unknown = explicit.filter((id) => !isSnowflake(id) || !known.has(id));
    if (unknown.length > 0) throw new UnknownDeadLettersError(unknown);
  }

  const summary: ReplaySummary = {
    dryRun: Boolean(options.dryRun),
    total: 0,
    replayed: 0,
    alreadyApplied: 0,
    failed: 0,
    skipped: 0,
    failures: [],
  };

  // Letters too old to replay: the pipeline would dead-letter them again as expired.
  const expired = await listPendingIdsBelow(options.db, minMessageId, {
    messageIds: explicit,
    queue: options.queue,
    reason: options.reason,
  });
  for (const id of expired) {
    summary.failures.push({
      messageId: id,
      error: 'older than the dedupe window: replaying it could apply it twice',
    });
  }
  summary.failed += expired.length;
  summary.total = explicit
    ? explicit.length
    : expired.length +
      (await countPendingFrom(options.db, minMessageId, {
        queue: options.queue,
        reason: options.reason,
      }));
  let done = expired.length;
  options.onProgress?.(done, summary.total);

  if (options.dryRun) {
    await dryRun(options, explicit, minMessageId, batchSize, summary);
    return summary;
  }

  const queues = createQueueCache(options.backend, options.partitions);
  const maxInFlight = Math.max(1, options.batchesInFlight ?? DEFAULT_REPLAY_BATCHES_IN_FLIGHT);
  const inFlight: Promise<void>[] = [];
  try {
    const chunks = explicit ? chunk(explicit, batchSize) : undefined;
    let after: string | undefined;
    for (let i = 0; ; i++) {
      let claimed: ReplayLetter[];
      // Letters this batch accounts for in the progress: the skipped ones count as handled.
      let handled: number;
      if (chunks) {
        if (i >= chunks.length) break;
        const ids = chunks[i]!;
        claimed = await claimForReplay(options.db, {
          messageIds: ids,
          minMessageId,
          limit: ids.length,
        });
        const tooOld = ids.filter((id) => expired.includes(id)).length;
        summary.skipped += ids.length - claimed.length - tooOld;
        handled = ids.length - tooOld;
      } else {
        claimed = await claimForReplay(options.db, {
          queue: options.queue,
          reason: options.reason,
          afterMessageId: after,
          minMessageId,
          limit: batchSize,
        });
        if (claimed.length === 0) break;
        after = claimed[claimed.length - 1]!.message_id;
        handled = claimed.length;
      }
      // The next claims (PostgreSQL) overlap the sending of earlier batches (Redis and
      // PostgreSQL); the window bounds how many claimed letters are in flight at once.
      if (inFlight.length >= maxInFlight) await inFlight.shift();
      const sent = (
        claimed.length > 0 ? replayBatch(options, queues, claimed, summary) : Promise.resolve()
      ).then(() => {
        done += handled;
        options.onProgress?.(Math.min(done, summary.total), summary.total);
      });
      // Awaited in order below; until then a failure must not count as unhandled.
      sent.catch(() => undefined);
      inFlight.push(sent);
    }
    while (inFlight.length > 0) await inFlight.shift();
    options.onProgress?.(Math.min(done, summary.total), summary.total);
  } finally {
    await Promise.allSettled(inFlight);
    await queues.close();
  }
  return summary;
}

/** Sends one claimed batch: applied ones are counted, the rest go back to their queues. */
async function replayBatch(
  options: ReplayOptions,
  queues: QueueCache,
  claimed: ReplayLetter[],
  summary: ReplaySummary,
): Promise<void> {
  // The visible copy and a failed original left by an interrupted move go first: an add under a
  // job id that still exists would be a no-op. A removal refused because the job is active means
  // a live delivery of the message, which the inbox fences like any other.
  const stale = new Map<string, Set<string>>();
  const staleJob = (queue: string, jobId: string) => {
    let ids = stale.get(queue);
    if (!ids) stale.set(queue, (ids = new Set()));
    ids.add(jobId);
  };
  for (const row of claimed) {
    const jobId = jobIdFor(row.message_id);
    staleJob(deadLetterQueueName(row.queue), jobId);
    // The original ran in the message's partition (the queue itself when unpartitioned).
    const home = queues.route(row.queue, row.message_id).name;
    staleJob(home, jobId);
    if (row.job_id) staleJob(home, row.job_id);
  }
  // Independent of each other: the inbox look-up (PostgreSQL) runs while Redis removes.
  const [applied] = await Promise.all([
    appliedMessageIds(
      options.db,
      claimed.map((r) => r.message_id),
    ),
    ...[...stale].map(([queue, ids]) => options.backend.removeJobs(queues.get(queue), [...ids])),
  ]);
  const toSend = claimed.filter((row) => !applied.has(row.message_id));
  summary.alreadyApplied += claimed.length - toSend.length;
  const byQueue = new Map<string, ReplayLetter[]>();
  for (const row of toSend) {
    const rows = byQueue.get(row.queue);
    if (rows) rows.push(row);
    else byQueue.set(row.queue, [row]);
  }
  // Back to pending, so a later replay can send them.
  const unclaim = (rows: ReplayLetter[]) =>
    unclaimReplayed(
      options.db,
      rows.map((r) => r.message_id),
    );
  await Promise.all(
    [...byQueue].map(async ([, rows]) => {
      try {
        const { added, refused } = await addMessageJobs(queues, rows, (row) =>
          jobOf(
            // A letter whose envelope had no usable token gets a fresh one: the token only
            // guards concurrent runs; the inbox is what keeps the effect single.
            { ...row, token: row.token ?? generateToken() },
            {
              maxAttempts: options.maxAttempts,
              backoffMs: options.backoffMs,
              priority: storedJobOptions(row.options).priority,
            },
          ),
        );
        summary.replayed += added.length;
        // A letter BullMQ refuses (options out of its range) stays pending with the reason
        // reported; it does not hold back the letters beside it.
        if (refused.length > 0) {
          await unclaim(refused.map((r) => r.item));
          summary.failed += refused.length;
          for (const { item, error } of refused) {
            summary.failures.push({
              messageId: item.message_id,
              error: `BullMQ refused the job: ${error.message}`,
            });
          }
        }
      } catch (err) {
        // Not sent (Redis away, say): every letter of the queue becomes pending again.
        await unclaim(rows);
        summary.failed += rows.length;
        const error = err instanceof Error ? err.message : String(err);
        for (const row of rows) summary.failures.push({ messageId: row.message_id, error });
      }
    }),
  );
}

/** Counts, without changing anything, what a replay would do now. */
async function dryRun(
  options: ReplayOptions,
  explicit: string[] | undefined,
  minMessageId: string,
  batchSize: number,
  summary: ReplaySummary,
): Promise<void> {
  let after: string | undefined;
  let done = summary.failed;
  const wanted = explicit ? new Set(explicit) : undefined;
  for (;;) {
    let rows = await listDeadLetters(options.db, {
      queue: options.queue,
      reason: options.reason,
      afterMessageId: after,
      limit: batchSize,
    });
    if (rows.length === 0) break;
    after = rows[rows.length - 1]!.message_id;
    rows = rows.filter(
      (r) => BigInt(r.message_id) >= BigInt(minMessageId) && (!wanted || wanted.has(r.message_id)),
    );
    const applied = await appliedMessageIds(
      options.db,
      rows.map((r) => r.message_id),
    );
    summary.alreadyApplied += applied.size;
    summary.replayed += rows.length - applied.size;
    done += rows.length;
    options.onProgress?.(Math.min(done, summary.total), summary.total);
  }
  if (explicit) {
    summary.skipped = explicit.length - summary.replayed - summary.alreadyApplied - summary.failed;
  }
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
