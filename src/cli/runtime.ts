/**
 * What every long-running CLI command shares: load the config, connect to Redis and PostgreSQL
 * with one clear line when either is missing, and shut down on SIGTERM/SIGINT.
 */
import type { Logger } from 'pino';
import { loadConfig, type Config } from '../config.js';
import { OnceqError } from '../core/errors.js';
import { createDb, checkDatabase, type Db } from '../db/create-db.js';
import { assertQueueBackend } from '../db/queue-backends.repository.js';
import {
  checkRedis,
  closeRedis,
  createRedisClient,
  describeRedis,
  type RedisClient,
} from '../redis/connection.js';
import { createLogger } from '../logger.js';
import { assertNoLegacyWorkerIdLeases } from '../ids/legacy-lease-check.js';
import type { Backend } from '../queues/backend.js';
import { createBackend } from '../lib/connections.js';
import { resolveServices } from './services.js';

/** Open connections of a command. */
export interface Runtime {
  config: Config;
  logger: Logger;
  db: Db;
  /** `undefined` in PostgreSQL-only mode. */
  redis: RedisClient | undefined;
  backend: Backend;
  close(): Promise<void>;
}

/** Options of {@link openRuntime}. */
export interface RuntimeOptions {
  /** Extra session settings for a worker's pool (idle-in-transaction bound). */
  worker?: boolean;
  /** Commands that must not hang waiting for Redis. */
  failFast?: boolean;
  /**
   * Commands that mint message ids: refuse to start beside processes of the version that leased
   * worker ids in Redis (ids/legacy-lease-check.ts).
   */
  mintsIds?: boolean;
  name?: string;
  /** The configuration, services decided (cli/services.ts). @defaultValue the environment's */
  config?: Config;
}

/** Loads the config and opens the connections, checking each. */
export async function openRuntime(options: RuntimeOptions = {}): Promise<Runtime> {
  const config = options.config ?? (await resolveServices(loadConfig())).config;
  const logger = createLogger({ level: config.logLevel, name: options.name });
  const connectionName = `onceq-${options.name ?? 'cli'}`;
  const target = config.redisClusterNodes ?? config.redisUrl;
  const redis: RedisClient | undefined =
    target === undefined
      ? undefined
      : createRedisClient(target, { failFast: options.failFast, connectionName });
  const backend = createBackend({
    redis,
    database: config.databaseUrl,
    prefix: config.prefix,
    schema: config.databaseSchema,
    poolSize: config.poolSize,
  });
  const db = createDb({
    url: config.databaseUrl,
    schema: config.databaseSchema,
    poolSize: config.poolSize,
    // A paused worker's transaction must not block the message's next owner for long.
    idleInTransactionTimeoutMs: options.worker ? config.lockDurationMs : 0,
    // A hung statement must end, or its delivery would keep renewing the message's claim.
    statementTimeoutMs: options.worker ? config.statementTimeoutMs : 0,
    applicationName: `onceq-${options.name ?? 'cli'}`,
  });
  const close = async () => {
    await backend.close();
    if (redis) await closeRedis(redis);
    await db.destroy();
  };
  try {
    if (redis) await checkRedis(redis, config.redisUrl ?? describeRedis(redis));
    await checkDatabase(db, config.databaseUrl);
    await assertQueueBackend(db, config.prefix, backend.kind);
    if (redis && options.mintsIds) await assertNoLegacyWorkerIdLeases(redis, config.prefix);
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
  return { config, logger, db, redis, backend, close };
}

/**
 * Runs a command's body and turns known failures into one line on stderr and exit code 1;
 * unknown failures keep their stack, since they are bugs.
 */
export async function runCommand(body: () => Promise<number | void>): Promise<void> {
  try {
    const code = await body();
    process.exitCode = code ?? 0;
  } catch (err) {
    if (err instanceof OnceqError) {
      process.stderr.write(`onceq: ${err.message}\n`);
    } else {
      process.stderr.write(`onceq: ${(err as Error)?.stack ?? String(err)}\n`);
    }
    process.exitCode = 1;
  }
}

/**
 * Ends the process now with `code`, after the logger has written what it holds. For the paths
 * where waiting for everything to close could take unbounded time (a handler still running past
 * the shutdown bound): the operating system closes the sockets, and PostgreSQL rolls back any
 * transaction left open on them.
 */
export function exitNow(code: number, logger?: Logger): never {
  try {
    logger?.flush();
  } catch {
    // A logger that cannot flush must not turn an exit into a crash.
  }
  process.exit(code);
}

/**
 * Resolves at the first SIGTERM or SIGINT; a second signal exits at once with code 130.
 */
export function waitForShutdownSignal(logger: Logger): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let received = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (received) {
        logger.warn({ signal }, 'second signal: exiting now');
        exitNow(130, logger);
      }
      received = true;
      logger.info({ signal }, 'shutting down');
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
