/**
 * The connections of a library component: opened from a URL (and then closed by onceq) or
 * taken as given (and then never closed by onceq, as BullMQ does with a connection it is given).
 * Both are checked before the component is handed out, so a component that resolved is ready.
 */
import type pg from 'pg';
import { checkDatabase, createDb, type Db } from '../db/create-db.js';
import { ConfigError } from '../core/errors.js';
import { assertQueueBackend } from '../db/queue-backends.repository.js';
import {
  checkRedis,
  closeRedis,
  createRedisClient,
  describeRedis,
  type RedisClient,
} from '../redis/connection.js';
import type { Backend } from '../queues/backend.js';
import { createRedisBackend } from '../queues/redis-backend.js';
import { createPostgresBackend } from '../queues/postgres-backend.js';
import type { ClusterNode } from '../core/cluster-nodes.js';
import type { ResolvedConnectionOptions } from './options.js';

/** Session settings and names of the component's connections. */
export interface ConnectionSettings {
  /** `application_name` and Redis connection name. */
  name: string;
  /** `idle_in_transaction_session_timeout`, ms; 0 for none. @defaultValue 0 */
  idleInTransactionTimeoutMs?: number;
  /** `statement_timeout`, ms; 0 for none. @defaultValue 0 */
  statementTimeoutMs?: number;
  /** Give up on an unreachable Redis instead of reconnecting forever (short CLI commands). */
  failFast?: boolean;
}

/** Open, checked connections; `close()` closes only the ones onceq opened. */
export interface Connections {
  readonly db: Db;
  /** The Redis connection; `undefined` in PostgreSQL-only mode. */
  readonly redis: RedisClient | undefined;
  /** Where the queues and tokens live. */
  readonly backend: Backend;
  close(): Promise<void>;
}

/**
 * Opens (or takes) the connections and checks each; closes what it opened if a check fails.
 * Without `redis`, onceq runs on PostgreSQL alone (queues/postgres-backend.ts).
 */
export async function openConnections(
  options: Pick<ResolvedConnectionOptions, 'redis' | 'database' | 'schema' | 'poolSize' | 'prefix'>,
  settings: ConnectionSettings,
): Promise<Connections> {
  const given = options.redis;
  const ownsRedis = typeof given === 'string' || Array.isArray(given);
  const redis: RedisClient | undefined = ownsRedis
    ? createRedisClient(given as string | readonly ClusterNode[], {
        failFast: settings.failFast,
        connectionName: settings.name,
      })
    : (given as RedisClient | undefined);
  const backend = createBackend({ ...options, redis });
  const db = createDb({
    ...(typeof options.database === 'string'
      ? { url: options.database }
      : { pool: options.database }),
    schema: options.schema,
    poolSize: options.poolSize,
    idleInTransactionTimeoutMs: settings.idleInTransactionTimeoutMs ?? 0,
    statementTimeoutMs: settings.statementTimeoutMs ?? 0,
    applicationName: settings.name,
  });
  const close = async () => {
    await backend.close();
    if (ownsRedis && redis) await closeRedis(redis);
    // Ends the pool only when onceq opened it (create-db.ts).
    await db.destroy();
  };
  try {
    if (redis) {
      await checkRedis(redis, typeof given === 'string' ? given : describeRedis(redis));
    }
    await checkDatabase(
      db,
      typeof options.database === 'string' ? options.database : 'the given pg.Pool',
    );
    await assertQueueBackend(db, options.prefix, backend.kind);
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
  return { db, redis, backend, close };
}

/**
 * The backend of a component: Redis mode over `redis`, PostgreSQL-only mode without it (BullMQ's
 * tables in the schema named by the prefix, in the database `database` names or points to).
 */
export function createBackend(options: {
  redis: RedisClient | undefined;
  database: string | pg.Pool;
  prefix: string;
  /** onceq's schema, which BullMQ's must not be. */
  schema: string;
  poolSize: number;
}): Backend {
  if (!options.redis) assertQueueSchemaName(options.prefix, options.schema);
  return options.redis
    ? createRedisBackend({ redis: options.redis, prefix: options.prefix })
    : createPostgresBackend({
        connection:
          typeof options.database === 'string' ? options.database : options.database.options,
        prefix: options.prefix,
        workerPoolSize: options.poolSize,
      });
}

/**
 * In PostgreSQL-only mode the prefix names the schema of BullMQ's tables: an SQL identifier
 * BullMQ accepts, and a schema of BullMQ's alone (its plain `job`, `event` tables and its
 * `remove`, `clean` functions must not land among onceq's or an application's).
 */
function assertQueueSchemaName(prefix: string, schema: string): void {
  const problems: string[] = [];
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(prefix)) {
    problems.push(
      `prefix ${prefix}: in PostgreSQL-only mode it names the schema of BullMQ's tables: a letter ` +
        'or _, then letters, digits or _ (at most 63)',
    );
  } else if (prefix === 'public' || prefix === schema) {
    problems.push(
      `prefix ${prefix}: in PostgreSQL-only mode it names the schema of BullMQ's tables, which ` +
        `must be neither public nor onceq's schema`,
    );
  }
  if (problems.length > 0) throw new ConfigError(problems, { subject: 'options' });
}
