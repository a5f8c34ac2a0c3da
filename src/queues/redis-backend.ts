/**
 * The Redis backend: BullMQ on Redis and the token store as Lua scripts. Every queue and worker
 * shares the connection it is given (BullMQ duplicates it for a worker's blocking commands); the
 * token store takes a duplicate with auto-pipelining (on a single Redis), so the claims and
 * `done` marks of concurrent deliveries issued in one tick travel in one write.
 *
 * On a Redis Cluster every BullMQ script must find all its keys in one hash slot, and the queues
 * should spread over the masters: each queue's keys carry a hash tag of their own
 * ({@link bullmqPrefix}), never one tag for all of onceq (which would put everything on one
 * shard). onceq's own keys (`<prefix>:~token:…`) are one key per script and need no tag.
 */
import { Queue, Worker } from 'bullmq';
import {
  closeRedis,
  describeRedis,
  duplicateRedis,
  isCluster,
  type RedisClient,
} from '../redis/connection.js';
import { createTokenStore } from '../redis/token-store.js';
import type { Backend } from './backend.js';
import { removeJobs } from './remove-jobs.js';

/** Options of {@link createRedisBackend}. */
export interface RedisBackendOptions {
  /** The connection, to one Redis or to a Redis Cluster (not closed by the backend). */
  redis: RedisClient;
  /** Prefix of every Redis key, BullMQ's and onceq's. */
  prefix: string;
}

/**
 * BullMQ's prefix for queue `name`: `prefix` on a single Redis (keys `onceq:ledger:wait`, as
 * they always were), `prefix:{name}` on a cluster (keys `onceq:{ledger}:ledger:wait`, all in the
 * slot of `ledger`). The queue keeps its name, so jobs, events and Bull Board still say `ledger`;
 * the two layouts never meet, since a cluster is a Redis of its own.
 */
export function bullmqPrefix(prefix: string, name: string, cluster: boolean): string {
  return cluster ? `${prefix}:{${name}}` : prefix;
}

/** A backend over a Redis connection; `close()` leaves the connection open. */
export function createRedisBackend(
  options: RedisBackendOptions,
): Backend & { readonly redis: RedisClient } {
  const { redis, prefix } = options;
  const cluster = isCluster(redis);
  return {
    kind: 'redis',
    prefix,
    redis,
    where: describeRedis(redis),
    newQueue(name) {
      return new Queue(name, { connection: redis, prefix: bullmqPrefix(prefix, name, cluster) });
    },
    newWorker(name, processor, workerOptions) {
      return new Worker(name, processor, {
        connection: redis,
        prefix: bullmqPrefix(prefix, name, cluster),
        ...workerOptions,
        autorun: false,
      });
    },
    openTokenStore({ maxOutstanding }) {
      // Not on a cluster: there an auto-pipelined batch to a node whose slots just moved (a
      // failover) gets MOVED for some of its commands, and ioredis returns those as errors
      // instead of following them, as it does for a command sent alone.
      const tokenRedis = duplicateRedis(redis, {
        enableAutoPipelining: !cluster,
        lazyConnect: false,
      });
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
