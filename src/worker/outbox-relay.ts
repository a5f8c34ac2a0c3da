/**
 * The outbox relay: moves committed follow-up messages from the `outbox` table to BullMQ with
 * their pre-minted messageIds. Every worker process runs one; `FOR UPDATE SKIP LOCKED` lets
 * relays share the work without waiting on each other. Per batch, in one transaction: take the
 * rows (deleting them and recording them as accepted messages), add their jobs to BullMQ,
 * commit. A relay that dies before the commit leaves the rows for the next run: their jobs are
 * added again under the same job ids, and any extra delivery is absorbed by the inbox. A row
 * BullMQ refuses is dead-lettered as `invalid` in that transaction, and a row whose id clashes
 * with another message's is quarantined in the outbox and logged as an error, so neither can
 * hold back the others.
 */
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import { takeOutboxBatch } from '../db/outbox.repository.js';
import { upsertDeadLetter, type DeadLetter } from '../db/dead-letters.repository.js';
import type { PendingFollowUp } from '../db/outbox.repository.js';
import type { IdClashError } from '../core/errors.js';
import { storedJobOptions } from '../queues/message-job-options.js';
import { createQueueCache } from '../queues/queue-cache.js';
import { addMessageJobs } from '../queues/add-message-jobs.js';
import { jobOf, type MessageJob } from '../queues/message-job.js';
import { startPeriodic, type PeriodicTask } from './periodic.js';
import {
  createDeadLetterWriter,
  deadLetterOfRefused,
  type DeadLetterWriter,
} from './dead-letters.js';

import { DEFAULT_OUTBOX_INTERVAL_MS } from '../core/defaults.js';
import type { Backend } from '../queues/backend.js';
import type { QueuePartitions } from '../core/queue-partitions.js';
import { messageTraceOf } from '../core/message.js';
import { inBatchSendSpan } from '../telemetry/tracing.js';
/** Rows per relay transaction. */
export const DEFAULT_OUTBOX_BATCH = 500;

/** Options of {@link createOutboxRelay}. */
export interface OutboxRelayOptions {
  db: Db;
  /** Where the queues live (not closed here). */
  backend: Backend;
  /**
   * Partition counts of the queues (the job registry's `partitions()`): a message's job is added
   * to its partition. @defaultValue every queue unpartitioned
   */
  partitions?: QueuePartitions;
  /** Where follow-ups BullMQ refuses go. @defaultValue a writer of the relay's own */
  deadLetters?: DeadLetterWriter;
  /** @defaultValue {@link DEFAULT_OUTBOX_INTERVAL_MS} */
  intervalMs?: number;
  /** @defaultValue {@link DEFAULT_OUTBOX_BATCH} */
  batchSize?: number;
  /** Attempts of the follow-up jobs. @defaultValue 10 */
  maxAttempts?: number;
  /** @defaultValue 1000 ms */
  backoffMs?: number;
  logger?: Logger;
}

/** A relay; `start()` begins the background loop. */
export interface OutboxRelay {
  /** Sends every committed row now; resolves with how many were sent. */
  runOnce(): Promise<number>;
  start(): void;
  /** Asks the running loop to send now (after a commit that wrote follow-ups). */
  nudge(): void;
  close(): Promise<void>;
}

/** The trace context each row's `ctx.enqueue` recorded (the batch's send span links to them). */
function rowTraces(rows: readonly PendingFollowUp[]): unknown[] {
  return rows.map((row) => (row.options as { trace?: unknown } | null)?.trace);
}

/** Creates a relay. */
export function createOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  const queues = createQueueCache(options.backend, options.partitions);
  const ownWriter = options.deadLetters
    ? undefined
    : createDeadLetterWriter({ db: options.db, backend: options.backend });
  const deadLetters = options.deadLetters ?? ownWriter!;
  const batchSize = options.batchSize ?? DEFAULT_OUTBOX_BATCH;
  let task: PeriodicTask | undefined;

  /**
   * One batch, in one transaction: take the rows, add their jobs, commit. A row BullMQ refuses
   * (a follow-up whose options it does not accept) would roll the whole batch back at every run,
   * and every follow-up behind it would wait forever: its dead letter (`invalid`) is written in
   * the same transaction instead, so the row leaves the outbox if and only if its letter is
   * recorded, and the other rows go out. A failing add (Redis away) rolls the batch back for the
   * next run; nothing is dead-lettered for it.
   */
  async function relayBatch(): Promise<{ taken: number; sent: number }> {
    const refused: DeadLetter[] = [];
    let clashes: IdClashError | undefined;
    const taken = await options.db.transaction().execute(async (trx) => {
      const batch = await takeOutboxBatch(trx, batchSize);
      const rows = batch.rows;
      clashes = batch.clashes;
      const result = await inBatchSendSpan(rowTraces(rows), () =>
        addMessageJobs(queues, rows, followUpJobOf),
      );
      for (const { item: row, error } of result.refused) {
        const letter = deadLetterOfRefused(followUpJobOf(row), error, row.created_at);
        await upsertDeadLetter(trx, letter);
        refused.push(letter);
      }
      return rows.length;
    });
    if (clashes) {
      // Two messages were given one id: a broken worker-id lease or a hand-made id. Never
      // silent; the rows stay quarantined in the outbox for the operator.
      options.logger?.error(
        { err: clashes, messageIds: clashes.details.messageIds },
        'outbox relay quarantined follow-ups whose message id another message holds',
      );
    }
    for (const letter of refused) {
      options.logger?.warn(
        { messageId: letter.messageId, queue: letter.queue, error: letter.error },
        'outbox relay dead-lettered a follow-up BullMQ refuses to take',
      );
      await deadLetters.copy(letter);
    }
    return { taken: taken + (clashes?.details.messageIds.length ?? 0), sent: taken };
  }

  function followUpJobOf(row: PendingFollowUp): MessageJob {
    const job = jobOf(row, {
      maxAttempts: options.maxAttempts,
      backoffMs: options.backoffMs,
      ...storedJobOptions(row.options),
    });
    // The context of the handler's `ctx.enqueue`: the follow-up's delivery links to it.
    const trace = messageTraceOf(rowTraces([row])[0]);
    return trace ? { ...job, data: { ...job.data, trace } } : job;
  }

  async function runOnce(): Promise<number> {
    let sent = 0;
    for (;;) {
      const { taken, sent: n } = await relayBatch();
      sent += n;
      if (taken < batchSize) break;
    }
    if (sent > 0) options.logger?.debug({ sent }, 'outbox relayed');
    return sent;
  }

  return {
    runOnce,
    start() {
      task ??= startPeriodic({
        name: 'outbox-relay',
        intervalMs: options.intervalMs ?? DEFAULT_OUTBOX_INTERVAL_MS,
        firstRunMs: 0,
        run: runOnce,
        logger: options.logger,
      });
    },
    nudge: () => task?.nudge(),
    async close() {
      await task?.close();
      await queues.close();
      await ownWriter?.close();
    },
  };
}
