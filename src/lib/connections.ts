/**
 * The connections of a library component: opened from a URL (and then closed by onceq) or
 * taken as given (and then never closed by onceq, as BullMQ does with a connection it is given).
 * Both are checked before the component is handed out, so a component that resolved is ready.
 */
import type { Redis } from 'ioredis';
import { checkDatabase, createDb, type Db } from '../db/create-db.js';
import { checkRedis, closeRedis, createRedis } from '../redis/connection.js';
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
  readonly redis: Redis;
  close(): Promise<void>;
}

/** Opens (or takes) both connections and checks each; closes what it opened if a check fails. */
export async function openConnections(
  options: Pick<ResolvedConnectionOptions, 'redis' | 'database' | 'schema' | 'poolSize'>,
  settings: ConnectionSettings,
): Promise<Connections> {
  const ownsRedis = typeof options.redis === 'string';
  const redis =
    typeof options.redis === 'string'
      ? createRedis({
          url: options.redis,
          failFast: settings.failFast,
          connectionName: settings.name,
        })
      : options.redis;
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
    if (ownsRedis) await closeRedis(redis);
    // Ends the pool only when onceq opened it (create-db.ts).
    await db.destroy();
  };
  try {
    await checkRedis(redis, typeof options.redis === 'string' ? options.redis : describe(redis));
    await checkDatabase(
      db,
      typeof options.database === 'string' ? options.database : 'the given pg.Pool',
    );
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
  return { db, redis, close };
}

/** Where a given ioredis instance points, for messages (never with its password). */
function describe(redis: Redis): string {
  const { host, port } = redis.options;
  return `redis://${host ?? '127.0.0.1'}:${port ?? 6379}`;
}
