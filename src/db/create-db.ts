/**
 * The Kysely instance over a pg pool. The pool pins `search_path` to the configured schema so
 * tests (and multi-tenant deployments) can isolate onceq's tables without qualifying names, and
 * bounds how long a transaction may sit idle, which is what frees the inbox row of a paused
 * ("zombie") worker so the next owner of the message is not blocked behind it.
 */
import { CompiledQuery, Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Database } from './database.js';
import { redactUrl } from '../core/redact-url.js';
import { ServiceUnreachableError } from '../core/errors.js';

/** Idle time before the first TCP keepalive probe on a PostgreSQL connection. */
const KEEPALIVE_INITIAL_DELAY_MS = 10_000;

/** Options of {@link createDb}. */
export interface DbOptions {
  /** PostgreSQL URL; onceq creates the pool and ends it at `db.destroy()`. */
  url?: string;
  /**
   * A pool of the caller's instead of `url`, never ended by onceq. The session settings below
   * are applied to each of its connections the first time onceq uses it, with `set_config`, and
   * stay on that session: give onceq a pool of its own when other code shares the database.
   */
  pool?: pg.Pool;
  /** Schema holding onceq's tables. @defaultValue `public` */
  schema?: string;
  /** Pool size. @defaultValue 10 */
  poolSize?: number;
  /**
   * `idle_in_transaction_session_timeout` of every session, in ms; 0 disables it. A worker that is
   * paused mid-transaction loses its session after this long and its locks go with it.
   * @defaultValue 0
   */
  idleInTransactionTimeoutMs?: number;
  /**
   * `statement_timeout` of every session, in ms; 0 disables it. A statement that hangs (waiting
   * on a lock nobody releases, a stuck server) fails after this long instead of holding its
   * message's claim, which the worker renews while the delivery runs, forever. @defaultValue 0
   */
  statementTimeoutMs?: number;
  /** `application_name`, visible in `pg_stat_activity`. @defaultValue `onceq` */
  applicationName?: string;
}

/** The Kysely instance onceq passes around; `db.destroy()` ends its pool. */
export type Db = Kysely<Database>;

/** Creates the Kysely instance. Connections open lazily; call {@link checkDatabase} to fail fast. */
export function createDb(options: DbOptions): Db {
  const schema = options.schema ?? 'public';
  const idle = options.idleInTransactionTimeoutMs ?? 0;
  const statement = options.statementTimeoutMs ?? 0;
  if (options.pool) {
    const given = options.pool;
    return new Kysely<Database>({
      dialect: new PostgresDialect({
        pool: multiStatementPool(given, { owned: false }),
        // The same settings an owned pool passes at connect time, once per session onceq uses.
        onCreateConnection: async (connection) => {
          await connection.executeQuery(
            CompiledQuery.raw(
              "select set_config('search_path', $1, false), " +
                "set_config('idle_in_transaction_session_timeout', $2, false), " +
                "set_config('statement_timeout', $3, false)",
              [schema, String(idle), String(statement)],
            ),
          );
        },
      }),
    });
  }
  if (!options.url) throw new TypeError('createDb: a url or a pool is required');
  const settings = [`-c search_path=${schema}`];
  if (idle) settings.push(`-c idle_in_transaction_session_timeout=${idle}`);
  if (statement) settings.push(`-c statement_timeout=${statement}`);
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize ?? 10,
    application_name: options.applicationName ?? 'onceq',
    options: settings.join(' '),
    // A server that vanished without closing the connection (a network partition, a host that
    // died) is noticed by TCP keepalive within about a minute, not the OS default of two hours:
    // the query in flight then fails and its delivery is retried.
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
  });
  // A connection that dies while idle in the pool (a restarted server, a terminated backend) is
  // dropped by pg; without a listener the 'error' event would crash the process.
  pool.on('error', () => undefined);
  // A checked-out client whose backend is terminated (idle-in-transaction timeout, an operator's
  // pg_terminate_backend, a restart) emits 'error' too; the query in flight already rejects with
  // it, so the event itself needs only a listener to keep the process alive.
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
  });
  return new Kysely<Database>({
    dialect: new PostgresDialect({ pool: multiStatementPool(pool, { owned: true }) }),
  });
}

/**
 * The pool as Kysely sees it. A simple-protocol query with several statements makes pg answer
 * with an array of results, which Kysely cannot read; this wrapper hands Kysely the last one.
 * That lets `sql.raw('BEGIN; INSERT … RETURNING …')` travel as one round trip and still return
 * its rows (see db/message-transaction.ts). Single statements pass through untouched.
 */
function multiStatementPool(pool: pg.Pool, { owned }: { owned: boolean }): pg.Pool {
  const wrappers = new WeakMap<pg.PoolClient, pg.PoolClient>();
  const wrap = (client: pg.PoolClient): pg.PoolClient => {
    let wrapper = wrappers.get(client);
    if (!wrapper) {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      wrapper = Object.create(client, {
        query: {
          value: (...args: unknown[]) => {
            const result = query(...args);
            if (!(result instanceof Promise)) return result;
            return result.then((r: unknown) => (Array.isArray(r) ? r[r.length - 1] : r));
          },
        },
        release: { value: (err?: Error | boolean) => client.release(err) },
      }) as pg.PoolClient;
      wrappers.set(client, wrapper);
    }
    return wrapper;
  };
  return {
    connect: async () => wrap(await pool.connect()),
    // A pool the caller gave is the caller's to end.
    end: () => (owned ? pool.end() : Promise.resolve()),
  } as unknown as pg.Pool;
}

/**
 * One round trip that touches no table (`select 1`): whether PostgreSQL answers, for readiness
 * probes and start-up checks. Rejects with the driver's error.
 */
export async function pingDatabase(db: Db): Promise<void> {
  await db.selectNoFrom((eb) => eb.val(1).as('one')).execute();
}

/** {@link pingDatabase}, with a connection failure turned into one line that says where and how to start. */
export async function checkDatabase(db: Db, url: string): Promise<void> {
  try {
    await pingDatabase(db);
  } catch (err) {
    throw new ServiceUnreachableError(describeDatabaseFailure(err, url), err);
  }
}

/** One line naming PostgreSQL, the URL (without password), the reason, and the fix. */
export function describeDatabaseFailure(err: unknown, url: string): string {
  const reason =
    err instanceof Error ? err.message || (err as { code?: string }).code : String(err);
  return (
    `PostgreSQL is not reachable at ${redactUrl(url)} (${reason}); ` +
    'start it (`docker compose up -d postgres`) or set DATABASE_URL'
  );
}
