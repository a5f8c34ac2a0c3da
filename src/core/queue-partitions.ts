/**
 * Partitioned queues, without I/O: the BullMQ queue names of a logical queue's partitions, the
 * way back from a BullMQ queue name to its logical queue, and the routing of a message to its
 * partition.
 *
 * A queue declared with `partitions: N` (see `defineJob`) is N BullMQ queues. Each is a queue of
 * its own to BullMQ, with keys of its own: on a Redis Cluster each lands on a hash slot of its own,
 * so one busy queue spreads over the masters instead of loading one. Everything onceq stores and
 * shows speaks of the logical queue (the inbox, the dead letters, replay, metrics, `ctx.queue`);
 * only the adds and the BullMQ workers see partitions.
 *
 * Routing depends on the messageId alone, so every path that adds a message's job (the producer,
 * the outbox relay, dead-letter replay, the reconciler) and every path that looks one up (job
 * status, purge) computes the same partition without asking anyone: a duplicate enqueue finds
 * the job it duplicates, and a replay goes back to where the message ran.
 */
import { DEFAULT_PARTITIONS } from './defaults.js';

/** Most partitions a queue may have: far past any Redis Cluster's useful spread. */
export const MAX_PARTITIONS = 256;

/**
 * Between a logical queue's name and its partition number in the BullMQ queue name:
 * `ledger` with 4 partitions is `ledger#0` … `ledger#3`. Queue names a user may choose cannot
 * contain it (core/queue-name.ts), so a partition's queue never collides with a user's queue,
 * and the logical name is what comes before it. Not `:` (BullMQ's key separator, which it
 * refuses in queue names) and not `{` `}` (a Redis Cluster hash tag).
 */
export const PARTITION_SEPARATOR = '#';

/**
 * Partition counts by logical queue name; a queue that is absent has one partition. The job
 * registry builds it from the job definitions (`JobRegistry#partitions`).
 */
export type QueuePartitions = ReadonlyMap<string, number>;

/** The partition count of `queue` in `partitions` (1 when absent or no map is given). */
export function partitionCount(partitions: QueuePartitions | undefined, queue: string): number {
  return partitions?.get(queue) ?? DEFAULT_PARTITIONS;
}

/** True for a partition count `defineJob` accepts: an integer from 1 to {@link MAX_PARTITIONS}. */
export function isPartitionCount(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_PARTITIONS;
}

/**
 * The BullMQ queue name of partition `partition` of `queue`, which has `count` partitions. With
 * one partition it is the queue's own name: a queue that is not partitioned keeps the BullMQ
 * queue it always had, and its jobs need no migration.
 */
export function partitionQueueName(queue: string, partition: number, count: number): string {
  return count <= 1 ? queue : `${queue}${PARTITION_SEPARATOR}${partition}`;
}

/** Every BullMQ queue name of `queue`, partition 0 first. */
export function partitionQueueNames(queue: string, count: number): string[] {
  if (count <= 1) return [queue];
  return Array.from({ length: count }, (_, i) => partitionQueueName(queue, i, count));
}

/**
 * The logical queue of a BullMQ queue name: `ledger#2` → `ledger`; a name without a partition is
 * its own logical queue. What a worker records as a message's queue.
 */
export function logicalQueueName(bullQueueName: string): string {
  const at = bullQueueName.indexOf(PARTITION_SEPARATOR);
  return at < 0 ? bullQueueName : bullQueueName.slice(0, at);
}

/**
 * The partition of `messageId` among `count`: a 32-bit FNV-1a hash of the id's decimal string,
 * mixed by MurmurHash3's finaliser, modulo `count`.
 *
 * Not `BigInt(messageId) % count`: a snowflake's low bits are its per-millisecond sequence and
 * worker id, and at a low rate the sequence is 0 in almost every id, so a power-of-two count
 * would send nearly everything to one partition. FNV-1a alone spreads its high bits well but its
 * low bits poorly, hence the finaliser, whose every output bit depends on every input bit. The
 * hash reads the string, not a number, so it is defined for any id (and never loses precision
 * above 2^53). It is part of onceq's storage format: a message's job must be found in the same
 * partition by every process and every later version, so these constants never change (a test
 * pins known values).
 */
export function partitionOf(messageId: string, count: number): number {
  if (count <= 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < messageId.length; i++) {
    h ^= messageId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % count;
}

/** The BullMQ queue name that holds the job of `messageId` on `queue` of `count` partitions. */
export function routeMessage(queue: string, messageId: string, count: number): string {
  return partitionQueueName(queue, partitionOf(messageId, count), count);
}
