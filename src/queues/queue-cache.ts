/**
 * The BullMQ queue cache: `Queue` objects by name, created once per component (worker,
 * producer, admin routes, collectors, CLI) and closed together, on the component's backend
 * (Redis or PostgreSQL: queues/backend.ts), whose connections they share.
 */
import type { Queue } from 'bullmq';
import type { Backend } from './backend.js';

/** A lazily filled set of queues. */
export interface QueueCache {
  /** The queue called `name`, opened on first use. */
  get(name: string): Queue;
  /** Closes every queue opened so far and empties the cache (the backend stays open). */
  close(): Promise<void>;
}

/** Creates an empty cache over a backend. */
export function createQueueCache(backend: Backend): QueueCache {
  const queues = new Map<string, Queue>();
  return {
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
    async close() {
      const all = [...queues.values()];
      queues.clear();
      await Promise.all(all.map((q) => q.close()));
    },
  };
}
