/**
 * BullMQ options of a message's job, for every path that adds one: the producer, the outbox
 * relay, dead-letter replay and the reconciler. Each add is a fresh attempt budget. Also the
 * reading back of the `{delay, priority}` a message was recorded with.
 */
import type { JobsOptions } from 'bullmq';
import {
  DEFAULT_COMPLETED_JOB_RETENTION_COUNT,
  DEFAULT_COMPLETED_JOB_RETENTION_MS,
} from '../core/defaults.js';
import { jobIdFor } from '../core/message.js';

/** @defaultValue attempts 10, backoff base 1 s: the producer's defaults. */
export interface MessageJobOptions {
  maxAttempts?: number;
  backoffMs?: number;
  delay?: number;
  priority?: number;
}

/**
 * Completed jobs are kept a day for status look-ups; the inbox keeps the truth longer. BullMQ
 * applies it only when another job of the queue completes: a shorter or idle-proof retention is
 * the completed-job trimmer's (completed-job-trimmer.ts).
 */
export const REMOVE_ON_COMPLETE = Object.freeze({
  age: DEFAULT_COMPLETED_JOB_RETENTION_MS / 1_000,
  count: DEFAULT_COMPLETED_JOB_RETENTION_COUNT,
});

/** The options of the job of `messageId`. */
export function messageJobOptions(messageId: string, options: MessageJobOptions = {}): JobsOptions {
  return {
    jobId: jobIdFor(messageId),
    attempts: options.maxAttempts ?? 10,
    backoff: { type: 'exponential', delay: options.backoffMs ?? 1_000, jitter: 0.5 },
    removeOnComplete: { ...REMOVE_ON_COMPLETE },
    removeOnFail: false,
    ...(options.delay ? { delay: options.delay } : {}),
    ...(options.priority ? { priority: options.priority } : {}),
  };
}

/** The `{delay, priority}` stored with a message, read back defensively (it is jsonb). */
export function storedJobOptions(value: unknown): { delay?: number; priority?: number } {
  const v = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  const num = (x: unknown) =>
    Number.isSafeInteger(x) && (x as number) > 0 ? (x as number) : undefined;
  return { delay: num(v.delay), priority: num(v.priority) };
}
