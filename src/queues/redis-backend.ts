/**
 * The Redis backend: BullMQ on Redis and the token store as Lua scripts. Every queue and worker
 * shares the connection it is given (BullMQ duplicates it for a worker's blocking commands); the
 * token store takes a duplicate with auto-pipelining, so the claims and `done` marks of
 * concurrent deliveries issued in one tick travel in one write.
 */
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { closeRedis } from '../redis/connection.js';
import { createTokenStore } from '../redis/token-store.js';
import type { Backend } from './backend.js';
import { removeJobs } from './remove-jobs.js';

/** Options of {@link createRedisBackend}. */
export interface RedisBackendOptions {
  /** The connection (not closed by the backend). */
  redis: Redis;
  /** Prefix of every Redis key, BullMQ's and onceq's. */
  prefix: string;
}

/** A backend over a Redis connection; `close()` leaves the connection open. */
export function createRedisBackend(
  options: RedisBackendOptions,
): Backend & { readonly redis: Redis } {
  const { redis, prefix } = options;
  const { host, port } = redis.options;
  return {
    kind: 'redis',
    prefix,
    redis,
    where: `redis://${host ?? '127.0.0.1'}:${port ?? 6379}`,
    newQueue(name) {
      return new Queue(name, { connection: redis, prefix });
    },
    newWorker(name, processor, workerOptions) {
      return new Worker(name, processor, {
        connection: redis,
        prefix,
        ...workerOptions,
        autorun: false,
      });
    },
    openTokenStore({ maxOutstanding }) {
      const tokenRedis = redis.duplicate({ enableAutoPipelining: true, lazyConnect: false });
      // Errors surface on the commands that fail; the event needs a listener only.
      tokenRedis.on('error', () => undefined);
      return {
        tokens: createTokenStore(tokenRedis, { prefix, maxOutstanding }),
        close: () => closeRedis(tokenRedis),
      };
    },
    removeJobs(queue, jobIds) {
      return removeJobs(redis, queue, jobIds);
    },
    async ping() {
      await redis.ping();
    },
    async close() {
      // Nothing of its own: the connection is the caller's.
    },
  };
}
