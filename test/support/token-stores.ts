/**
 * The two token stores as the contract suites in test/tokens/ see them: one backend per
 * implementation, each opened for one test in a namespace of its own (a Redis key prefix, a
 * PostgreSQL schema migrated from the real migrations) and removing it when closed. Besides the
 * stores, a backend offers the little a test needs from behind a store's back: losing a token's
 * state (as a Redis that lost the key) and listing the tokens it holds. Real services only.
 */
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import { createDb, type Db } from '../../src/db/create-db.js';
import { createPgTokenStore } from '../../src/db/token-store.js';
import type { TokenStore } from '../../src/core/token-store.js';
import { closeRedis } from '../../src/redis/connection.js';
import { tokenKey } from '../../src/redis/keys.js';
import { createTokenStore } from '../../src/redis/token-store.js';
import { TEST_DATABASE_URL, createTestSchema, deletePrefix, testRedis, uniqueName } from './env.js';

/** What both stores take: their bounds (the Redis store's prefix is the backend's). */
export interface StoreBounds {
  maxOutstanding?: number;
  maxResultBytes?: number;
}

/** One implementation of the token store, opened for one test. */
export interface TokenBackend {
  /** `redis` or `postgres`. */
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

export type BackendName = 'redis' | 'postgres';

/** Opens a backend for one test; `label` names its prefix or schema. */
export interface TokenBackendFactory {
  readonly name: BackendName;
  open(label: string): Promise<TokenBackend>;
}

/** Closes a connection and waits for its socket to go: QUIT's reply comes before the close. */
export async function closeFully(connection: Redis): Promise<void> {
  if (connection.status === 'end') return;
  const ended = new Promise<void>((resolve) => connection.once('end', () => resolve()));
  await closeRedis(connection);
  await ended;
}

const redisBackend: TokenBackendFactory = {
  name: 'redis',
  async open(label) {
    const redis = testRedis();
    const prefix = uniqueName(label);
    const others: Redis[] = [];
    const store = (connection: Redis, bounds: StoreBounds = {}) =>
      createTokenStore(connection, { prefix, ...bounds });
    return {
      name: 'redis',
      store: (bounds) => store(redis, bounds),
      storesOnOwnConnections(n, bounds) {
        return Array.from({ length: n }, () => {
          const connection = testRedis();
          others.push(connection);
          return store(connection, bounds);
        });
      },
      async lose(token) {
        await redis.del(tokenKey(prefix, token));
      },
      async storedTokens() {
        const found: string[] = [];
        const start = tokenKey(prefix, '');
        let cursor = '0';
        do {
          // SCAN, not KEYS: the Redis is shared.
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${start}*`, 'COUNT', 1000);
          cursor = next;
          found.push(...keys.map((k) => k.slice(start.length)));
        } while (cursor !== '0');
        return found.sort();
      },
      async close() {
        await deletePrefix(redis, prefix);
        await Promise.all([redis, ...others].map((c) => closeFully(c)));
      },
    };
  },
};

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

/** Both implementations: every contract case runs against each. */
export const TOKEN_BACKENDS: readonly TokenBackendFactory[] = [redisBackend, postgresBackend];
