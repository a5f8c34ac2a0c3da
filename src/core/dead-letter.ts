/**
 * Dead-letter rules without I/O: the reasons, the name of a queue's visible dead-letter queue,
 * and the dedupe-window arithmetic that decides when a message is too old to run.
 */
import { firstSnowflakeAt, isSnowflake, ONCEQ_EPOCH_MS, snowflakeTimeMs } from './snowflake.js';

/** Why a message was dead-lettered. */
export const DEAD_LETTER_REASONS = ['exhausted', 'invalid', 'expired', 'stalled'] as const;
export type DeadLetterReason = (typeof DEAD_LETTER_REASONS)[number];

/** True for one of {@link DEAD_LETTER_REASONS}. */
export function isDeadLetterReason(value: unknown): value is DeadLetterReason {
  return (DEAD_LETTER_REASONS as readonly unknown[]).includes(value);
}

/**
 * Suffix of the BullMQ queue that holds the visible copy of a queue's dead letters. Job queues
 * may not end with it (see `defineJob`), so a dead-letter queue is never consumed by mistake.
 */
export const DEAD_LETTER_QUEUE_SUFFIX = '.dlq';

/** The BullMQ dead-letter queue of a queue: `ledger` → `ledger.dlq`. */
export function deadLetterQueueName(queue: string): string {
  return `${queue}${DEAD_LETTER_QUEUE_SUFFIX}`;
}

/** True for a dead-letter queue's name. */
export function isDeadLetterQueueName(queue: string): boolean {
  return queue.endsWith(DEAD_LETTER_QUEUE_SUFFIX);
}

/**
 * Whether a message is older than the dedupe window, judged by the time inside its snowflake
 * id: its inbox row may already be pruned, so running it could apply it a second time.
 * Ids that are not canonical snowflakes count as expired: their age cannot be told.
 */
export function isExpired(messageId: string, nowMs: number, dedupeWindowMs: number): boolean {
  if (!isSnowflake(messageId)) return true;
  return snowflakeTimeMs(messageId) < nowMs - dedupeWindowMs;
}

/**
 * Extra age, beyond the dedupe window, before the pruner deletes inbox rows. The pipeline
 * refuses messages older than the window by its own clock, cheaply and before any claim; the
 * pruner deletes only rows older than the window plus this margin, so a delivery that passed
 * that check just before the boundary still finds its inbox row. What rules out a second effect
 * is not this margin but the pruning cutoff recorded in PostgreSQL (db/pruning.repository.ts),
 * which holds whatever the clocks and settings of the processes say.
 */
export const PRUNE_MARGIN_MS = 10 * 60_000;

/**
 * The largest message id the pruner deletes at `nowMs`: every id minted before the window plus
 * the margin. `-1` (nothing) while that lies before the epoch.
 */
export function prunedThroughId(nowMs: number, dedupeWindowMs: number): string {
  const boundaryMs = nowMs - dedupeWindowMs - PRUNE_MARGIN_MS;
  if (boundaryMs <= ONCEQ_EPOCH_MS) return '-1';
  return (BigInt(firstSnowflakeAt(boundaryMs)) - 1n).toString();
}
