/**
 * The BullMQ queue cache: `Queue` objects by name, created once per component (worker,
 * producer, admin routes, collectors, CLI) and closed together, on the component's backend
 * (Redis or PostgreSQL: queues/backend.ts), whose connections they share.
 *
 * It also knows the partitions of the component's queues (core/queue-partitions.ts): a message's
 * job is added to and looked up in {@link QueueCache.route}'s queue, and a logical queue's
 * BullMQ queues are {@link QueueCache.partitions}'. A cache made without partition counts sees
 * every queue as one BullMQ queue of its own name.
 */
import type { Queue } from 'bullmq';
import type { Backend } from './backend.js';
import {
  partitionCount,
  partitionQueueNames,
  routeMessage,
  type QueuePartitions,
} from '../core/queue-partitions.js';

/** A lazily filled set of queues. */
export interface QueueCache {
  /** The BullMQ queue called `name` (a partition's own name, or a dead-letter queue), opened on first use. */
  get(name: string): Queue;
  /** The BullMQ queue that holds (or will hold) the job of `messageId` on the logical `queue`. */
  route(queue: string, messageId: string): Queue;
  /** Every BullMQ queue of the logical `queue`, partition 0 first (the queue itself when unpartitioned). */
  partitions(queue: string): Queue[];
  /** Closes every queue opened so far and empties the cache (the backend stays open). */
  close(): Promise<void>;
}

/** Creates an empty cache over a backend, with the partition counts of the queues it serves. */
export function createQueueCache(backend: Backend, partitions?: QueuePartitions): QueueCache {
  const queues = new Map<string, Queue>();
  const cache: QueueCache = {
    get(name) {
      let queue = queues.get(name);
      if (!queue) {
        queue = backend.newQueue(name);
        // Errors surface on the commands that fail; the event needs a listener only.
        queue.on('error', () => undefined);
        queues.set(name, queue);
      }
      return queue;
    },
    route(queue, messageId) {
      return cache.get(routeMessage(queue, messageId, partitionCount(partitions, queue)));
    },
    partitions(queue) {
      return partitionQueueNames(queue, partitionCount(partitions, queue)).map(cache.get);
    },
    async close() {
      const all = [...queues.values()];
      queues.clear();
      await Promise.all(all.map((q) => q.close()));
    },
  };
  return cache;
}
