/**
 * The BullMQ queue cache: `Queue` objects by name, created once per component (worker,
 * producer, admin routes, collectors, CLI) and closed together. Queues share the connection they
 * are given (it is not closed here).
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';

/** A lazily filled set of queues. */
export interface QueueCache {
  /** The queue called `name`, opened on first use. */
  get(name: string): Queue;
  /** Closes every queue opened so far and empties the cache (the connection stays open). */
  close(): Promise<void>;
}

/** Creates an empty cache over `redis` and `prefix`. */
export function createQueueCache(redis: Redis, prefix: string): QueueCache {
  const queues = new Map<string, Queue>();
  return {
    get(name) {
      let queue = queues.get(name);
      if (!queue) {
        queue = new Queue(name, { connection: redis, prefix });
        // Errors surface on the commands that fail; the event needs a listener only.
        queue.on('error', () => undefined);
        queues.set(name, queue);
      }
      return queue;
    },
    async close() {
      const all = [...queues.values()];
      queues.clear();
      await Promise.all(all.map((q) => q.close()));
    },
  };
}
