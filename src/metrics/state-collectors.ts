/**
 * Scrape-time collectors of fleet-wide state: dead letters pending in PostgreSQL (the truth; the
 * BullMQ `<queue>.dlq` copies are only for dashboards), the outbox's depth and lag, and BullMQ's
 * job counts of the work queues and their dead-letter queues (a partitioned queue's counts are
 * its partitions' summed, under its own name: one queue to an operator, as everywhere else). Each is one cheap query per scrape
 * (the pending dead letters have a partial index; the outbox is small when the relay keeps up).
 */
import type { Db } from '../db/create-db.js';
import { countPendingDeadLetters } from '../db/dead-letters.repository.js';
import { outboxBacklog } from '../db/outbox.repository.js';
import { deadLetterQueueName } from '../core/dead-letter.js';
import { isSnowflake, snowflakeTimeMs } from '../core/snowflake.js';
import { createQueueCache } from '../queues/queue-cache.js';
import type { QueuePartitions } from '../core/queue-partitions.js';
import type { Metrics } from './metrics.js';
import type { Backend } from '../queues/backend.js';

/** BullMQ states reported by `onceq_queue_jobs`. */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'failed'] as const;

/** Options of {@link addStateCollectors}. */
export interface StateCollectorsOptions {
  db: Db;
  /** Where the queues live (not closed here). */
  backend: Backend;
  /** The work queues (logical names); their dead-letter queues are added. */
  queues: readonly string[];
  /** Partition counts of the queues (the job registry's `partitions()`). @defaultValue none */
  partitions?: QueuePartitions;
}

/** Adds the collectors; the returned function removes them and closes their BullMQ queues. */
export function addStateCollectors(
  metrics: Metrics,
  options: StateCollectorsOptions,
): () => Promise<void> {
  const queueCache = createQueueCache(options.backend, options.partitions);
  const queueNames = [
    ...new Set(options.queues.flatMap((q) => [q, deadLetterQueueName(q)])),
  ].sort();

  const removers = [
    metrics.addCollector('dead_letters', async () => {
      const rows = await countPendingDeadLetters(options.db);
      // A queue whose letters were all replayed must drop to nothing, not keep its last count.
      metrics.deadLetters.reset();
      for (const row of rows) {
        metrics.deadLetters.set({ queue: row.queue, reason: row.reason }, row.count);
      }
    }),
    metrics.addCollector('outbox', async () => {
      const { depth, oldestMessageId: oldest } = await outboxBacklog(options.db);
      metrics.outboxMessages.set(depth);
      // The follow-up's id was minted inside its parent's transaction: its age is the lag.
      metrics.outboxLagSeconds.set(
        oldest && isSnowflake(oldest)
          ? Math.max(0, (Date.now() - snowflakeTimeMs(oldest)) / 1000)
          : 0,
      );
    }),
    metrics.addCollector('queues', async () => {
      // A dead-letter queue is one BullMQ queue; a work queue is one per partition.
      const counts = await Promise.all(
        queueNames.map((name) =>
          Promise.all(
            queueCache.partitions(name).map((queue) => queue.getJobCounts(...QUEUE_STATES)),
          ),
        ),
      );
      for (const [i, name] of queueNames.entries()) {
        for (const state of QUEUE_STATES) {
          const total = counts[i]!.reduce((sum, c) => sum + (c[state] ?? 0), 0);
          metrics.queueJobs.set({ queue: name, state }, total);
        }
      }
    }),
  ];

  return async () => {
    for (const remove of removers) remove();
    await queueCache.close();
  };
}
