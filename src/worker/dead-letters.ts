/**
 * Moving a message to its queue's dead-letter queue (DESIGN.md section 5). The order is what
 * keeps the move lossless:
 *
 *   1. the durable copy, a `dead_letters` row in PostgreSQL (the truth: Redis may lose data);
 *   2. the visible copy, a job in the BullMQ queue `<queue>.dlq` (dashboards, depth metrics);
 *   3. the original fails in BullMQ (a {@link DeadLetteredError}, no further attempts) and is
 *      then removed from its queue.
 *
 * A crash before 1 leaves the original to be redelivered; a crash between 1 and 3 leaves the
 * message in both places, and the inbox absorbs a second delivery of it. Jobs that BullMQ fails
 * on its own (a job that stalled too often) and originals whose removal was cut short are found
 * by the reconciler, which finishes the move.
 *
 * Replay undoes the move in bulk: `removeJobs` (queues/remove-jobs.ts) takes the visible copies
 * (and any original left behind) off their queues a batch per script call.
 */
import { UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import { upsertDeadLetter, type DeadLetter } from '../db/dead-letters.repository.js';
import { deadLetterQueueName, type DeadLetterReason } from '../core/dead-letter.js';
import { logicalQueueName } from '../core/queue-partitions.js';
import { isWellFormedToken } from '../core/token.js';
import { isSnowflake } from '../core/snowflake.js';
import { jobIdFor } from '../core/message.js';
import { createQueueCache } from '../queues/queue-cache.js';
import type { MessageJob } from '../queues/message-job.js';
import { NO_FAULTS, type FaultHook } from './fault-hook.js';
import type { Backend } from '../queues/backend.js';

/**
 * Thrown by the pipeline once a message is dead-lettered: BullMQ fails the job without further
 * attempts, and the worker then removes it from its queue.
 */
export class DeadLetteredError extends UnrecoverableError {
  constructor(
    readonly reason: DeadLetterReason,
    message: string,
  ) {
    super(message);
    this.name = 'DeadLetteredError';
  }
}

/** Options of {@link createDeadLetterWriter}. */
export interface DeadLetterWriterOptions {
  db: Db;
  /** Where the queues live (not closed here). */
  backend: Backend;
  fault?: FaultHook;
  logger?: Logger;
}

/** Writes dead letters; `close()` closes the BullMQ queues it opened. */
export interface DeadLetterWriter {
  /** Steps 1 and 2: the durable copy, then the visible one. Throws when step 1 fails. */
  write(letter: DeadLetter): Promise<void>;
  /**
   * Step 2 alone, for a caller that wrote the durable copy in a transaction of its own (with
   * `upsertDeadLetter`) and committed it. A failure is logged, not thrown.
   */
  copy(letter: DeadLetter): Promise<void>;
  /**
   * Step 3's removal, once BullMQ has failed the original; a failure is logged, not thrown.
   * `queue` is the BullMQ queue that holds it (a partition's own name, for a partitioned queue).
   */
  removeOriginal(queue: string, jobId: string): Promise<void>;
  close(): Promise<void>;
}

/** Creates a writer. */
export function createDeadLetterWriter(options: DeadLetterWriterOptions): DeadLetterWriter {
  const queues = createQueueCache(options.backend);
  const fault = options.fault ?? NO_FAULTS;
  const writer: DeadLetterWriter = {
    async write(letter) {
      await upsertDeadLetter(options.db, letter);
      await writer.copy(letter);
    },
    async copy(letter) {
      try {
        const dlq = queues.get(deadLetterQueueName(letter.queue));
        // Added under the message's job id: a second move of the same message keeps one copy.
        await dlq.add(
          letter.jobName,
          {
            messageId: letter.messageId,
            token: letter.token,
            data: letter.data,
            deadLetter: {
              queue: letter.queue,
              reason: letter.reason,
              error: letter.error,
              attempts: letter.attempts,
              deadAt: new Date().toISOString(),
            },
          },
          { jobId: jobIdFor(letter.messageId), removeOnComplete: true, removeOnFail: true },
        );
      } catch (err) {
        // PostgreSQL has the letter; only the dashboard copy is missing.
        options.logger?.warn(
          { err, messageId: letter.messageId, queue: letter.queue },
          'dead letter recorded, but its copy in the BullMQ dead-letter queue failed',
        );
      }
      fault.at('dead-letter-copied');
    },
    async removeOriginal(queue, jobId) {
      try {
        await queues.get(queue).remove(jobId);
      } catch (err) {
        options.logger?.warn({ err, queue, jobId }, 'could not remove a dead-lettered job');
      }
    },
    close: () => queues.close(),
  };
  return writer;
}

/**
 * The dead letter of a BullMQ job, from what the job carries. `undefined` when the job's data
 * has no usable messageId (it was not an onceq message: nothing to key a dead letter by).
 */
export function deadLetterOf(
  job: Job,
  reason: DeadLetterReason,
  err: unknown,
  attempts: number,
): DeadLetter | undefined {
  const data = (typeof job.data === 'object' && job.data !== null ? job.data : {}) as Record<
    string,
    unknown
  >;
  const messageId = data.messageId;
  if (typeof messageId !== 'string' || !isSnowflake(messageId)) return undefined;
  const error = err instanceof Error ? err : undefined;
  return {
    messageId,
    // A partition's dead letters are the logical queue's: one `.dlq`, one queue to replay to.
    queue: logicalQueueName(job.queueName),
    jobName: job.name,
    jobId: String(job.id ?? ''),
    data: 'data' in data ? data.data : null,
    token: isWellFormedToken(data.token) ? (data.token as string) : null,
    reason,
    error: error ? error.message : err === undefined ? null : String(err),
    stack: error?.stack ?? null,
    attempts,
    options: job.opts.priority ? { priority: job.opts.priority } : {},
    enqueuedAt: job.timestamp ? new Date(job.timestamp) : null,
  };
}

/**
 * The dead letter of a message whose job BullMQ refuses to add (see queues/add-message-jobs.ts):
 * it never ran, so it spent no attempt. Its priority is kept as it was refused: the letter shows
 * what was wrong.
 */
export function deadLetterOfRefused(
  job: MessageJob,
  error: Error,
  enqueuedAt: Date | null,
): DeadLetter {
  return {
    messageId: job.data.messageId,
    queue: job.queue,
    jobName: job.name,
    jobId: String(job.opts.jobId ?? jobIdFor(job.data.messageId)),
    data: job.data.data,
    token: isWellFormedToken(job.data.token) ? job.data.token : null,
    reason: 'invalid',
    error: `BullMQ refused the job: ${error.message}`,
    stack: error.stack ?? null,
    attempts: 0,
    options: job.opts.priority ? { priority: job.opts.priority } : {},
    enqueuedAt,
  };
}
