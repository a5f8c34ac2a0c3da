/**
 * The token stores as the contract suites in test/tokens/ see them: one backend per
 * implementation (the Redis store on one Redis and on a Redis Cluster, the PostgreSQL store),
 * each opened for one test in a namespace of its own (a Redis key prefix, a PostgreSQL schema
 * migrated from the real migrations) and removing it when closed. Besides the
 * stores, a backend offers the little a test needs from behind a store's back: losing a token's
 * state (as a Redis that lost the key) and listing the tokens it holds. Real services only.
 */
import { sql } from 'kysely';
import { closeRedis, isCluster, type RedisClient } from '../../src/redis/connection.js';
import { createDb, type Db } from '../../src/db/create-db.js';
import { createPgTokenStore } from '../../src/db/token-store.js';
import type { TokenStore } from '../../src/core/token-store.js';
import { tokenKey } from '../../src/redis/keys.js';
import { createTokenStore } from '../../src/redis/token-store.js';
import { sharedClusterClient } from './shared-cluster.js';
import {
  TEST_DATABASE_URL,
  createTestSchema,
  deletePrefix,
  scanKeys,
  testRedis,
  uniqueName,
} from './env.js';

/** What both stores take: their bounds (the Redis store's prefix is the backend's). */
export interface StoreBounds {
  maxOutstanding?: number;
  maxResultBytes?: number;
}

/** One implementation of the token store, opened for one test. */
export interface TokenBackend {
  /** `redis`, `redis-cluster` or `postgres`. */
  readonly name: BackendName;
  /** A store over this test's namespace (throws as the store's factory does on bad bounds). */
  store(bounds?: StoreBounds): TokenStore;
  /** `n` stores over connections of their own, for concurrency across connections. */
  storesOnOwnConnections(n: number, bounds?: StoreBounds): TokenStore[];
  /** Deletes the token's state behind the store's back, as a Redis that lost the key. */
  lose(token: string): Promise<void>;
  /** The tokens whose state the store holds and has not let expire, sorted. */
  storedTokens(): Promise<string[]>;
  /** Closes every connection it opened and removes the namespace. */
  close(): Promise<void>;
}

export type BackendName = 'redis' | 'redis-cluster' | 'postgres';

/** Opens a backend for one test; `label` names its prefix or schema. */
export interface TokenBackendFactory {
  readonly name: BackendName;
  open(label: string): Promise<TokenBackend>;
}

/** Closes a connection and waits for its socket to go: QUIT's reply comes before the close. */
export async function closeFully(connection: RedisClient): Promise<void> {
  if (connection.status === 'end') return;
  const ended = new Promise<void>((resolve) => connection.once('end', () => resolve()));
  await closeRedis(connection);
  await ended;
}

/**
 * The Redis store over a connection `connect()` opens: one Redis, or the run's shared cluster
 * (where a SCAN sees one node's keys, so the stored tokens are looked for on every master).
 */
function redisStoreBackend(
  name: BackendName,
  connect: () => Promise<RedisClient>,
): TokenBackendFactory {
  return {
    name,
    async open(label) {
      const redis = await connect();
      const prefix = uniqueName(label);
      const others: RedisClient[] = [];
      const store = (connection: RedisClient, bounds: StoreBounds = {}) =>
        createTokenStore(connection, { prefix, ...bounds });
      return {
        name,
        store: (bounds) => store(redis, bounds),
        storesOnOwnConnections(n, bounds) {
          return Array.from({ length: n }, () => {
            // A cluster connection of its own connects lazily, on its first command.
            const connection = isCluster(redis) ? redis.duplicate() : testRedis();
            others.push(connection);
            return store(connection, bounds);
          });
        },
        async lose(token) {
          await redis.del(tokenKey(prefix, token));
        },
        async storedTokens() {
          const start = tokenKey(prefix, '');
          const keys = await scanKeys(redis, `${start}*`);
          return keys.map((k) => k.slice(start.length)).sort();
        },
        async close() {
          await deletePrefix(redis, prefix);
          await Promise.all([redis, ...others].map((c) => closeFully(c)));
        },
      };
    },
  };
}

const redisBackend = redisStoreBackend('redis', async () => testRedis());
/** The Redis store on the run's shared Redis Cluster: every script on a cluster's slots. */
const redisClusterBackend = redisStoreBackend('redis-cluster', () =>
  sharedClusterClient('onceq-test'),
);

const postgresBackend: TokenBackendFactory = {
  name: 'postgres',
  async open(label) {
    const { db, schema, drop } = await createTestSchema(label);
    const others: Db[] = [];
    return {
      name: 'postgres',
      store: (bounds) => createPgTokenStore(db, bounds),
      storesOnOwnConnections(n, bounds) {
        // One pool of n: concurrent calls each take a connection of their own.
        const pool = createDb({ url: TEST_DATABASE_URL, schema, poolSize: n });
        others.push(pool);
        return Array.from({ length: n }, () => createPgTokenStore(pool, bounds));
      },
      async lose(token) {
        await sql`delete from message_tokens where token = ${token}`.execute(db);
      },
      async storedTokens() {
        const { rows } = await sql<{ token: string }>`
          select token from message_tokens where expires_at_ms >= onceq_clock_ms()
          order by token collate "C"`.execute(db);
        return rows.map((r) => r.token);
      },
      async close() {
        await Promise.all(others.map((pool) => pool.destroy()));
        await drop();
      },
    };
  },
};

/** Every implementation, the Redis store on a cluster too: every contract case runs on each. */
export const TOKEN_BACKENDS: readonly TokenBackendFactory[] = [
  redisBackend,
  redisClusterBackend,
  postgresBackend,
];
