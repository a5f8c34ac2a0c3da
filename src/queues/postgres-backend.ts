/**
 * The PostgreSQL backend (PostgreSQL-only mode): BullMQ on its PostgreSQL backend and the token
 * store as a table (db/token-store.ts). BullMQ's tables live in a schema of their own, named by
 * the prefix, beside onceq's schema: its `job`, `event` and `migration` tables never meet an
 * application's tables, and two deployments with different prefixes share a database as they
 * would share a Redis.
 *
 * Each BullMQ queue and worker object owns a small pool (BullMQ pins its sessions'
 * `search_path` to the schema, and reads the schema's version at start, which a pool given to it
 * cannot carry) and, for a worker, one `LISTEN` connection outside it. The first object of a
 * process runs BullMQ's migrations (`migrate: true`, under BullMQ's advisory lock; a no-op when
 * the schema is current).
 */
import {
  withBackend,
  createPostgresBackend as createBullPostgresBackend,
  type PostgresPoolConfig,
  type Queue,
  type Worker,
} from 'bullmq';
import type pg from 'pg';
import { createPgTokenStore, deleteExpiredTokens } from '../db/token-store.js';
import { redactUrl } from '../core/redact-url.js';
import type { Backend, RemovedJobs } from './backend.js';

/** Options of {@link createPostgresBackend}. */
export interface PostgresBackendOptions {
  /** A `postgres://` URL, or the options of the pool onceq was given (its `pg.Pool#options`). */
  connection: string | pg.PoolConfig;
  /** Schema of BullMQ's tables: the prefix. */
  prefix: string;
  /** Connections of a worker's BullMQ pool. @defaultValue 10 */
  workerPoolSize?: number;
}

/** Connections of a queue object's BullMQ pool (adds, counts, removals). */
const QUEUE_POOL_SIZE = 3;
/** Expired token rows deleted per statement, and most statements per sweep. */
const TOKEN_SWEEP_BATCH = 1_000;
const TOKEN_SWEEP_BATCHES = 100;
/** Jobs removed at once by {@link Backend.removeJobs}. */
const REMOVE_CONCURRENCY = 16;

const { Queue: PgQueue, Worker: PgWorker } = withBackend(createBullPostgresBackend);

/** A backend over PostgreSQL; `close()` has nothing of its own to close. */
export function createPostgresBackend(options: PostgresBackendOptions): Backend {
  const { prefix } = options;
  const base: pg.PoolConfig =
    typeof options.connection === 'string'
      ? { connectionString: options.connection }
      : options.connection;
  const connection = (max: number): PostgresPoolConfig => ({
    ...(base as PostgresPoolConfig),
    max,
    schema: prefix,
    migrate: true,
    keepAlive: true,
  });
  return {
    kind: 'postgres',
    prefix,
    where: describe(options.connection, prefix),
    newQueue(name) {
      return new PgQueue(name, { connection: connection(QUEUE_POOL_SIZE) }) as unknown as Queue;
    },
    newWorker(name, processor, workerOptions) {
      return new PgWorker(name, processor, {
        connection: connection(options.workerPoolSize ?? 10),
        ...workerOptions,
        autorun: false,
      }) as unknown as Worker;
    },
    openTokenStore({ db, maxOutstanding }) {
      return {
        tokens: createPgTokenStore(db, { maxOutstanding }),
        close: async () => undefined,
        // Again at once while a batch comes back full, up to a bound per sweep.
        async deleteExpired() {
          let deleted = 0;
          for (let i = 0; i < TOKEN_SWEEP_BATCHES; i++) {
            const n = await deleteExpiredTokens(db, { limit: TOKEN_SWEEP_BATCH });
            deleted += n;
            if (n < TOKEN_SWEEP_BATCH) break;
          }
          return deleted;
        },
      };
    },
    async removeJobs(queue, jobIds) {
      const result: RemovedJobs = { removed: 0, missing: 0, refused: [] };
      const ids = [...jobIds];
      const next = async (): Promise<void> => {
        for (let id = ids.shift(); id !== undefined; id = ids.shift()) {
          if ((await queue.remove(id)) === 1) result.removed++;
          // Not removed: gone already, or locked by a live delivery.
          else if (await queue.getJob(id)) result.refused.push(id);
          else result.missing++;
        }
      };
      await Promise.all(Array.from({ length: REMOVE_CONCURRENCY }, next));
      return result;
    },
    async ping() {
      // The queues' own pools answer for themselves; readiness pings onceq's database.
    },
    async close() {
      // Every queue and worker object closes its own pool.
    },
  };
}

/** Where the queues live, for messages (never with a password). */
function describe(connection: string | pg.PoolConfig, prefix: string): string {
  if (typeof connection === 'string') return `${redactUrl(connection)} (schema ${prefix})`;
  const { host, port, database } = connection;
  return `postgres://${String(host ?? '127.0.0.1')}:${port ?? 5432}/${database ?? ''} (schema ${prefix})`;
}
