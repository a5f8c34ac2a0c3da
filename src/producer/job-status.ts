/**
 * The status of an accepted message, as `GET /v1/jobs/:jobId` reports it. BullMQ knows the live
 * job (queued, active, completed, failed); once BullMQ has removed it (completed jobs are kept a
 * day), PostgreSQL still knows: the inbox row means completed, with the stored result; an
 * accepted message without a job or inbox row is queued (the reconciler re-enqueues it).
 *
 * `dead` comes from a {@link DeadLetterLookup} (the durable dead-letter queue, DESIGN.md section
 * 5: see dead-letter-lookup.ts); without one, a failed job reads `failed` and a vanished one
 * `queued`.
 */
import type { Queue } from 'bullmq';
import type { Db } from '../db/create-db.js';
import { findAcceptedByMessageId } from '../db/accepted-messages.repository.js';
import { findApplied } from '../db/inbox.repository.js';
import { messageIdOf } from '../core/message.js';

/** States a client sees. */
export type JobState = 'queued' | 'active' | 'completed' | 'failed' | 'dead';

/** What the status look-up answers. */
export interface JobStatus {
  jobId: string;
  messageId: string;
  queue: string;
  name: string;
  state: JobState;
  /** Attempts made; `null` once the BullMQ job is gone. */
  attempts: number | null;
  /** The handler's result, when completed. */
  result?: unknown;
  /** The last failure: why it failed, went dead, or is being retried. */
  error?: string;
  acceptedAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

/** A dead letter of a message, as the dead-letter queue reports it. */
export interface DeadLetterInfo {
  reason: string;
  error?: string;
  deadAt?: Date;
}

/**
 * Finds the dead letter of a message, if any. Consulted when BullMQ reports the job failed, or no
 * longer has it.
 */
export interface DeadLetterLookup {
  find(message: { messageId: string; queue: string }): Promise<DeadLetterInfo | undefined>;
}

/** Options of {@link findJobStatus}. */
export interface JobStatusOptions {
  db: Db;
  /**
   * The BullMQ queue that holds the job of `messageId` on the logical queue `name` (its
   * partition, for a partitioned queue: the producer's `queueFor`).
   */
  queue(name: string, messageId: string): Queue;
  deadLetters?: DeadLetterLookup;
}

/**
 * The status of a job, or `undefined` when there is no such job or it is not `principal`'s
 * (one answer for both, so job ids cannot be probed). `principal` undefined sees every job.
 */
export async function findJobStatus(
  options: JobStatusOptions,
  jobId: string,
  principal: string | undefined,
): Promise<JobStatus | undefined> {
  const messageId = messageIdOf(jobId);
  if (!messageId) return undefined;
  const accepted = await findAcceptedByMessageId(options.db, messageId);
  if (!accepted || (principal !== undefined && accepted.principal !== principal)) return undefined;

  const base = {
    jobId,
    messageId,
    queue: accepted.queue,
    name: accepted.job_name,
    acceptedAt: accepted.accepted_at.toISOString(),
  };
  const iso = (ms: number | undefined | null): string | null =>
    ms ? new Date(ms).toISOString() : null;

  // The state first, then the job: a job read first can finish before its state is read, and
  // would be reported completed with the attempts, result and timestamps of an active job. A
  // state read as final stays final, so the job read after it agrees.
  const queue = options.queue(accepted.queue, messageId);
  const bullState = await queue.getJobState(jobId);
  const job = bullState === 'unknown' ? undefined : await queue.getJob(jobId);
  if (job) {
    let state: JobState;
    let error = job.failedReason || undefined;
    switch (bullState) {
      case 'active':
        state = 'active';
        break;
      case 'completed':
        state = 'completed';
        break;
      case 'failed': {
        const dead = await options.deadLetters?.find({ messageId, queue: accepted.queue });
        state = dead ? 'dead' : 'failed';
        if (dead?.error ?? dead?.reason) error = dead.error ?? dead.reason;
        break;
      }
      default:
        // waiting, delayed (also a retry's backoff), prioritized, waiting-children, unknown
        state = 'queued';
    }
    const returned = job.returnvalue as { result?: unknown } | null | undefined;
    return {
      ...base,
      state,
      attempts: job.attemptsMade,
      ...(state === 'completed' ? { result: returned?.result ?? null } : {}),
      ...(error && state !== 'completed' ? { error } : {}),
      startedAt: iso(job.processedOn),
      finishedAt:
        state === 'completed' || state === 'failed' || state === 'dead'
          ? iso(job.finishedOn)
          : null,
    };
  }

  const inbox = await findApplied(options.db, messageId);
  if (inbox) {
    return {
      ...base,
      state: 'completed',
      attempts: null,
      result: inbox.result ?? null,
      startedAt: null,
      finishedAt: inbox.applied_at.toISOString(),
    };
  }
  const dead = await options.deadLetters?.find({ messageId, queue: accepted.queue });
  if (dead) {
    return {
      ...base,
      state: 'dead',
      attempts: null,
      error: dead.error ?? dead.reason,
      startedAt: null,
      finishedAt: dead.deadAt ? dead.deadAt.toISOString() : null,
    };
  }
  // Accepted, but BullMQ lost the job (a Redis without persistence): the reconciler re-adds it.
  return { ...base, state: 'queued', attempts: null, startedAt: null, finishedAt: null };
}
