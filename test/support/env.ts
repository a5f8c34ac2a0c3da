/**
 * Test isolation: each suite gets its own Redis key prefix and its own PostgreSQL schema, made by
 * the real migrations (run once per test process into a template that each schema copies, see
 * schema-template.ts), and removes both afterwards. Real services only; no mocks.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import { createDb, type Db } from '../../src/db/create-db.js';
import { createMigratedSchema } from './schema-template.js';
import { createRedis, type RedisClient } from '../../src/redis/connection.js';
import type { Backend, BackendKind } from '../../src/queues/backend.js';
import { createRedisBackend } from '../../src/queues/redis-backend.js';
import { createPostgresBackend } from '../../src/queues/postgres-backend.js';

/** The Redis the tests use. */
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** A database of its own, so tests never touch a real `onceq` database. */
export const TEST_DATABASE_URL =
  process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/onceq_test';

/**
 * The mode the suites that run in both run in when they do not say (`ONCEQ_TEST_BACKEND=postgres`
 * runs them on PostgreSQL alone). @defaultValue `redis`
 */
export const TEST_BACKEND: BackendKind =
  process.env.ONCEQ_TEST_BACKEND === 'postgres' ? 'postgres' : 'redis';

/** The modes a suite that runs in both iterates over. */
export const BACKENDS: readonly BackendKind[] = ['redis', 'postgres'];

/**
 * Where a suite's stacks run: one of the {@link BACKENDS}, or Redis mode on the run's shared
 * Redis Cluster (test/support/shared-cluster.ts). Suites run on the cluster the cases that
 * exercise what differs there (key layout, scripts, multi-key and SCAN-like operations), not
 * all of them: `npm test` has a time budget.
 */
export type TestMode = BackendKind | 'redis-cluster';

/** The modes of {@link BACKENDS}, then the cluster. */
export const MODES: readonly TestMode[] = [...BACKENDS, 'redis-cluster'];

/** A Redis backend over a test's connection and prefix. */
export function redisBackend(redis: RedisClient, prefix: string): Backend {
  return createRedisBackend({ redis, prefix });
}

/**
 * A backend of the given kind under `prefix`: Redis keys under it, or BullMQ's tables in a
 * PostgreSQL schema of that name in the test database (drop it with {@link dropQueueSchema}).
 */
export function testBackend(kind: BackendKind, redis: RedisClient, prefix: string): Backend {
  return kind === 'redis'
    ? createRedisBackend({ redis, prefix })
    : createPostgresBackend({ connection: TEST_DATABASE_URL, prefix, workerPoolSize: 10 });
}

/** Drops the schema of a PostgreSQL backend's BullMQ tables. */
export async function dropQueueSchema(db: Db, prefix: string): Promise<void> {
  await sql`drop schema if exists ${sql.id(prefix)} cascade`.execute(db);
}

/** A fresh name like `t_label_1a2b3c4d`, usable as a Redis prefix and a schema name. */
export function uniqueName(label: string): string {
  return `t_${label.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;
}

/** A Redis connection for a test; close it with `closeRedis` in an after-hook. */
export function testRedis(): Redis {
  return createRedis({ url: TEST_REDIS_URL, connectionName: 'onceq-test' });
}

/** Deletes every key under a prefix (BullMQ's and onceq's); lists keys (every master's). */
export { deletePrefix, scanKeys } from '../../tools/support/redis.js';

/**
 * A schema of its own with onceq's tables and the ledger example's (most tests run the ledger
 * jobs); `drop()` removes the schema and closes the pool.
 */
export interface TestSchema {
  schema: string;
  db: Db;
  drop(): Promise<void>;
}

export async function createTestSchema(label: string, poolSize = 10): Promise<TestSchema> {
  const schema = uniqueName(label);
  const db = createDb({ url: TEST_DATABASE_URL, schema, poolSize, applicationName: 'onceq-test' });
  await createMigratedSchema(TEST_DATABASE_URL, db, schema);
  return {
    schema,
    db,
    async drop() {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
      await db.destroy();
    },
  };
}
