/**
 * The reconciler (DESIGN.md section 2, "Durable acceptance"): re-enqueues accepted messages that
 * have no inbox row, no dead letter and no live job once a grace period has passed, so that a
 * Redis that lost its data (a restart without persistence, a failover) loses no message. It
 * also finishes dead-letter moves that BullMQ started on its own: a job BullMQ failed without
 * onceq's pipeline (one that stalled too often), or whose move was cut short by a crash.
 *
 * One reconciler runs at a time across the fleet (a PostgreSQL advisory lock, which survives a
 * Redis flush). It scans `accepted_messages` in batches of message-id ranges, from a low-water
 * mark (the oldest message it last saw unsettled) up to the grace boundary, with a full rescan of
 * the dedupe window now and then for messages that became unsettled again below the mark (a
 * replayed dead letter whose job Redis then lost). Every re-add uses the message's job id, so a
 * job that turns out to exist is not duplicated, and the inbox absorbs any extra delivery.
 */
import type { Job, Queue } from 'bullmq';
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import type { AcceptedMessageRow } from '../db/database.js';
import { listUnsettledAccepted } from '../db/accepted-messages.repository.js';
import { LockId, withAdvisoryLock } from '../db/advisory-lock.js';
import { firstSnowflakeAt, ONCEQ_EPOCH_MS } from '../core/snowflake.js';
import type { MessageEnvelope } from '../core/message.js';
import { storedJobOptions } from '../queues/message-job-options.js';
import { createQueueCache } from '../queues/queue-cache.js';
import { addMessageJobs } from '../queues/add-message-jobs.js';
import { jobOf, type MessageJob } from '../queues/message-job.js';
import { startPeriodic, type PeriodicTask } from './periodic.js';
import { deadLetterOf, deadLetterOfRefused, type DeadLetterWriter } from './dead-letters.js';

import {
  DEFAULT_DEDUPE_WINDOW_MS,
  DEFAULT_RECONCILE_GRACE_MS,
  DEFAULT_RECONCILE_INTERVAL_MS,
} from '../core/defaults.js';
import type { Backend } from '../queues/backend.js';
import type { QueuePartitions } from '../core/queue-partitions.js';
/** Accepted messages examined per query. */
export const DEFAULT_RECONCILE_BATCH = 1_000;
/** How often the scan starts over from the start of the dedupe window. */
export const DEFAULT_FULL_SCAN_EVERY_MS = 3_600_000;

/** Options of {@link createReconciler}. */
export interface ReconcilerOptions {
  db: Db;
  /** Where the queues live (not closed here). */
  backend: Backend;
  /**
   * Partition counts of the queues (the job registry's `partitions()`): a message's job is looked
   * for, and re-added, in its partition. @defaultValue every queue unpartitioned
   */
  partitions?: QueuePartitions;
  deadLetters: DeadLetterWriter;
  /** @defaultValue {@link DEFAULT_RECONCILE_INTERVAL_MS} */
  intervalMs?: number;
  /** Messages younger than this are left alone. @defaultValue {@link DEFAULT_RECONCILE_GRACE_MS} */
  graceMs?: number;
  /** Older messages are the pruner's (dead-lettered as expired). @defaultValue 7 d */
  dedupeWindowMs?: number;
  /** @defaultValue {@link DEFAULT_RECONCILE_BATCH} */
  batchSize?: number;
  /** @defaultValue {@link DEFAULT_FULL_SCAN_EVERY_MS} */
  fullScanEveryMs?: number;
  maxAttempts?: number;
  backoffMs?: number;
  logger?: Logger;
  /** Called after every pass this process ran or skipped (metrics). */
  onPass?: (report: ReconcileReport) => void;
}

/** What one pass did. */
export interface ReconcileReport {
  /** False when another process holds the reconciler lock. */
  ran: boolean;
  /** Accepted messages with neither an inbox row nor a pending dead letter. */
  unsettled: number;
  /** Re-added to BullMQ: their jobs were gone. */
  reenqueued: number;
  /**
   * Moved to the dead-letter queue now: failed in BullMQ without a dead letter, or refused by
   * BullMQ when re-added (`invalid`).
   */
  deadLettered: number;
  /** The oldest message the pass left unsettled (its id carries its age); none when all are. */
  oldestUnsettledMessageId?: string;
}

/** A reconciler; `start()` begins the background loop. */
export interface Reconciler {
  runOnce(): Promise<ReconcileReport>;
  /** Totals since start, over the passes this process ran (metrics). */
  stats(): { passes: number; reenqueued: number; deadLettered: number };
  start(): void;
  close(): Promise<void>;
}

/** Creates a reconciler. */
export function createReconciler(options: ReconcilerOptions): Reconciler {
  const queues = createQueueCache(options.backend, options.partitions);
  const graceMs = options.graceMs ?? DEFAULT_RECONCILE_GRACE_MS;
  const windowMs = options.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS;
  const batchSize = options.batchSize ?? DEFAULT_RECONCILE_BATCH;
  const fullScanEveryMs = options.fullScanEveryMs ?? DEFAULT_FULL_SCAN_EVERY_MS;
  let watermark: string | undefined;
  let lastFullScan = 0;
  let task: PeriodicTask | undefined;
  const totals = { passes: 0, reenqueued: 0, deadLettered: 0 };

  async function pass(): Promise<Omit<ReconcileReport, 'ran'>> {
    const now = Date.now();
    const report: Omit<ReconcileReport, 'ran'> = { unsettled: 0, reenqueued: 0, deadLettered: 0 };
    const upper = firstSnowflakeAt(Math.max(ONCEQ_EPOCH_MS, now - graceMs));
    if (!watermark || now - lastFullScan >= fullScanEveryMs) {
      watermark = firstSnowflakeAt(Math.max(ONCEQ_EPOCH_MS, now - windowMs));
      lastFullScan = now;
    }
    let firstUnsettled: string | undefined;
    let from = watermark;
    let inclusive = true;
    for (;;) {
      const rows = await listUnsettledAccepted(options.db, {
        from,
        inclusive,
        upper,
        limit: batchSize,
      });
      if (rows.length === 0) break;
      from = rows[rows.length - 1]!.message_id;
      inclusive = false;
      report.unsettled += rows.length;
      // A job exists when its hash carries this message. After a partial loss an id can linger
      // in one of BullMQ's lists or sets with its hash gone: either nothing answers for it, or a
      // worker popped it and BullMQ's own scripts wrote a new hash holding only their bookkeeping
      // (moveToActive's `processedOn` and `ats`, the stall check's `stc`), which the pipeline then
      // fails as having no envelope. Such a husk can never run the message, in any state.
      const found = await Promise.all(
        rows.map(async (r) => {
          const queue = queueOf(r);
          // A queue BullMQ refuses to open holds no job: the message goes on as gone, and the
          // re-add dead-letters it.
          if (!queue) return undefined;
          const job = (await queue.getJob(r.job_id)) as Job | undefined;
          return job ? { job, state: await job.getState() } : undefined;
        }),
      );
      const gone: AcceptedMessageRow[] = [];
      const husks: AcceptedMessageRow[] = [];
      for (const [i, row] of rows.entries()) {
        const entry = found[i];
        if (!entry || entry.state === 'unknown') {
          gone.push(row);
          firstUnsettled ??= row.message_id;
        } else if (!carriesMessage(entry.job, row)) {
          husks.push(row);
          firstUnsettled ??= row.message_id;
        } else if (entry.state === 'failed') {
          if (await finishDeadLetter(row, entry.job)) report.deadLettered++;
          else firstUnsettled ??= row.message_id;
        } else if (entry.state !== 'completed') {
          firstUnsettled ??= row.message_id;
        }
      }
      // Stale ids first, so the add below is not taken for a duplicate of a job that is gone.
      await Promise.all(gone.map(removeJob));
      // A husk a worker holds right now (BullMQ refuses to remove a locked job) would turn the
      // add into a no-op; it is failed within moments and taken at the next pass.
      const removed = await Promise.all(husks.map(removeJob));
      gone.push(...husks.filter((_, i) => removed[i] === 1));
      const { added, refused } = await reenqueue(gone, now);
      report.reenqueued += added;
      report.deadLettered += refused;
      if (rows.length < batchSize) break;
    }
    watermark = firstUnsettled ?? upper;
    report.oldestUnsettledMessageId = firstUnsettled;
    totals.passes++;
    totals.reenqueued += report.reenqueued;
    totals.deadLettered += report.deadLettered;
    return report;
  }

  /** BullMQ's removal: 1 when removed (or nothing was there), 0 when locked or it failed. */
  async function removeJob(row: AcceptedMessageRow): Promise<number> {
    const queue = queueOf(row);
    return queue ? queue.remove(row.job_id).catch(() => 0) : 1;
  }

  /**
   * The BullMQ queue of a message's job (its partition); `undefined` for a name BullMQ refuses
   * (one row must not stop a pass).
   */
  function queueOf(row: AcceptedMessageRow): Queue | undefined {
    try {
      return queues.route(row.queue, row.message_id);
    } catch {
      return undefined;
    }
  }

  /**
   * Re-adds the jobs of `rows`; returns how many were added and how many BullMQ refused. A
   * refused message (options BullMQ does not accept, such as a priority above its limit) would
   * be refused at every pass: it is dead-lettered as `invalid` instead, so it neither stops the
   * pass nor comes back. A failing add (Redis away) throws: the pass ends and the next one
   * retries, nothing is dead-lettered for it.
   */
  async function reenqueue(
    rows: AcceptedMessageRow[],
    now: number,
  ): Promise<{ added: number; refused: number }> {
    const { added, refused } = await addMessageJobs(queues, rows, (row) => acceptedJobOf(row, now));
    for (const { item: row, error } of refused) {
      await options.deadLetters.write(
        deadLetterOfRefused(acceptedJobOf(row, now), error, row.accepted_at),
      );
      options.logger?.warn(
        { messageId: row.message_id, queue: row.queue, err: error },
        'reconciler dead-lettered an accepted message BullMQ refuses to take',
      );
    }
    if (added.length > 0) {
      options.logger?.warn(
        { count: added.length, first: added[0]!.message_id },
        'reconciler re-enqueued accepted messages whose jobs were gone',
      );
    }
    return { added: added.length, refused: refused.length };
  }

  /** The job of an accepted message; a delayed message keeps what is left of its delay. */
  function acceptedJobOf(row: AcceptedMessageRow, now: number): MessageJob {
    const stored = storedJobOptions(row.options);
    const delay = stored.delay
      ? Math.max(0, row.accepted_at.getTime() + stored.delay - now)
      : undefined;
    return jobOf(row, {
      maxAttempts: options.maxAttempts,
      backoffMs: options.backoffMs,
      priority: stored.priority,
      delay,
    });
  }

  /** Dead-letters a job BullMQ failed on its own, then removes it. */
  async function finishDeadLetter(row: AcceptedMessageRow, job: Job): Promise<boolean> {
    const reason = /stall/i.test(job.failedReason ?? '') ? 'stalled' : 'exhausted';
    const error = new Error(job.failedReason || 'failed in BullMQ');
    error.stack = job.stacktrace?.at(-1) ?? undefined;
    const letter = deadLetterOf(job, reason, error, job.attemptsMade);
    if (!letter) return false;
    await options.deadLetters.write(letter);
    await options.deadLetters.removeOriginal(job.queueName, row.job_id);
    options.logger?.warn(
      { messageId: row.message_id, queue: row.queue, reason },
      'reconciler dead-lettered a job BullMQ had failed',
    );
    return true;
  }

  async function runOnce(): Promise<ReconcileReport> {
    const result = await withAdvisoryLock(options.db, LockId.Reconciler, pass);
    const report: ReconcileReport = result.ran
      ? { ran: true, ...result.value }
      : { ran: false, unsettled: 0, reenqueued: 0, deadLettered: 0 };
    options.onPass?.(report);
    return report;
  }

  return {
    runOnce,
    stats: () => ({ ...totals }),
    start() {
      task ??= startPeriodic({
        name: 'reconciler',
        intervalMs: options.intervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS,
        run: runOnce,
        logger: options.logger,
      });
    },
    async close() {
      await task?.close();
      await queues.close();
    },
  };
}

/** Whether `job` is the message's job, not a husk of BullMQ bookkeeping left by a partial loss. */
function carriesMessage(job: Job, row: AcceptedMessageRow): boolean {
  const data = job.data as Partial<MessageEnvelope> | null | undefined;
  return typeof data === 'object' && data !== null && data.messageId === row.message_id;
}
