/**
 * The rule for a message's enqueue options (`queue`, `delay`, `priority`), shared by every door
 * a message comes in by: `POST /v1/jobs`, the producer library and `ctx.enqueue`. What one
 * refuses, all refuse, before anything is written; a message that got past would be recorded
 * (in PostgreSQL or the outbox) and then fail in `queue.add` or in a worker on every attempt.
 */
import { EnqueueOptionsError, type FieldError } from './errors.js';
import { isDeadLetterQueueName } from './dead-letter.js';
import { MAX_PRIORITY } from './limits.js';

/** The options as a caller sent them (unknown types: they may come from JSON or plain JS). */
export interface EnqueueOptionValues {
  queue?: unknown;
  delay?: unknown;
  priority?: unknown;
}

/** What the rule needs to know about the job and the fleet. */
export interface EnqueueOptionRules {
  /** The job's name, for the messages. */
  jobName: string;
  /** Queues the job is declared on (its definition's `queues`); the first is its default. */
  queues: readonly string[];
  /**
   * The workers' dedupe window: a message first delivered after it is dead-lettered as
   * `expired` unrun, so a `delay` that long is refused.
   */
  dedupeWindowMs: number;
}

/** Every problem with the options, as fields named by JSON pointer (`/queue`); empty if none. */
export function enqueueOptionProblems(
  values: EnqueueOptionValues,
  rules: EnqueueOptionRules,
): FieldError[] {
  const fields: FieldError[] = [];
  const { queue, delay, priority } = values;
  if (queue !== undefined) {
    const declared = rules.queues.map((q) => `"${q}"`).join(', ');
    if (typeof queue !== 'string') {
      fields.push({ path: '/queue', message: 'must be a string' });
    } else if (isDeadLetterQueueName(queue)) {
      // Never consumed: a message there would wait out the dedupe window and expire.
      fields.push({
        path: '/queue',
        message: `must not be a dead-letter queue; job ${rules.jobName} runs on ${declared}`,
      });
    } else if (!rules.queues.includes(queue)) {
      // No worker is bound to consume it, and each new name would cost a Queue object for good.
      fields.push({
        path: '/queue',
        message: `must be a queue job ${rules.jobName} is declared on: ${declared}`,
      });
    }
  }
  if (delay !== undefined) {
    if (!Number.isSafeInteger(delay) || (delay as number) < 0) {
      fields.push({ path: '/delay', message: 'must be a non-negative integer of milliseconds' });
    } else if ((delay as number) >= rules.dedupeWindowMs) {
      fields.push({
        path: '/delay',
        message:
          `must be below the dedupe window (${rules.dedupeWindowMs} ms): a message delivered ` +
          'after it is dead-lettered as expired',
      });
    }
  }
  if (
    priority !== undefined &&
    (!Number.isInteger(priority) || (priority as number) < 0 || (priority as number) > MAX_PRIORITY)
  ) {
    fields.push({ path: '/priority', message: `must be an integer from 0 to ${MAX_PRIORITY}` });
  }
  return fields;
}

/** Throws an {@link EnqueueOptionsError} listing every problem of {@link enqueueOptionProblems}. */
export function assertEnqueueOptions(
  values: EnqueueOptionValues,
  rules: EnqueueOptionRules,
  context = 'invalid enqueue options',
): void {
  const fields = enqueueOptionProblems(values, rules);
  if (fields.length === 0) return;
  throw new EnqueueOptionsError(
    `${context}: ${fields.map((f) => `${f.path} ${f.message}`).join('; ')}`,
    fields,
  );
}
