/**
 * A backend whose queues cannot be reached, of either kind, for the cases that check that an
 * unreachable queue store is never taken for the messages' fault: a Redis on a port nothing
 * listens on (every command fails at once), or BullMQ's PostgreSQL pools pointed at one.
 */
import { createRedis } from '../../src/redis/connection.js';
import type { Backend, BackendKind } from '../../src/queues/backend.js';
import { createPostgresBackend } from '../../src/queues/postgres-backend.js';
import { redisBackend } from './env.js';

/** Nothing listens on port 1. */
const NOWHERE = '127.0.0.1:1';

/** An unreachable backend under `prefix`; `close()` releases what it opened. */
export function unreachableBackend(
  kind: BackendKind,
  prefix: string,
): { backend: Backend; close(): Promise<void> } {
  if (kind === 'redis') {
    const redis = createRedis({ url: `redis://${NOWHERE}`, failFast: true });
    return {
      backend: redisBackend(redis, prefix),
      async close() {
        redis.disconnect();
      },
    };
  }
  const backend = createPostgresBackend({ connection: `postgres://postgres@${NOWHERE}/x`, prefix });
  return { backend, close: () => backend.close() };
}
