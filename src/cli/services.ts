/**
 * Which services a command runs on. `REDIS_URL` (Redis mode) and `DATABASE_URL` say so; with
 * `DATABASE_URL` alone onceq runs on PostgreSQL only. With neither set, a command looks at the
 * default ports: a Redis answering on 127.0.0.1:6379 is used as before, and without one onceq
 * runs on PostgreSQL alone; `onceq start` then also starts an embedded PostgreSQL when nothing
 * answers on 127.0.0.1:5432 (data in `ONCEQ_DATA_DIR`, `./.onceq/pg` by default), so that
 * `npm ci && npm start` runs on a machine with nothing but Node.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import { DEFAULT_REDIS_URL, loadConfig, queueMode, type Config } from '../config.js';
import {
  hasEmbeddedServer,
  isPortAnswering,
  runningEmbeddedUrl,
  startEmbeddedPostgres,
  type EmbeddedPostgres,
} from './embedded-postgres.js';

/** How long the default ports are given to answer. */
const PROBE_TIMEOUT_MS = 500;

/** A command's configuration with its services decided, and the embedded PostgreSQL if any. */
export interface Services {
  readonly config: Config;
  /** The embedded PostgreSQL this process started (stop it last). */
  readonly embedded: EmbeddedPostgres | undefined;
  /** One line for the first log: the mode, where, and why. */
  readonly summary: string;
  /** {@link summary} was logged already (before starting the embedded PostgreSQL). */
  readonly announced?: boolean;
}

/** Options of {@link resolveServices}. */
export interface ResolveServicesOptions {
  /** Start an embedded PostgreSQL when nothing answers on the default port (`onceq start`). */
  embedded?: boolean;
  logger?: Logger;
}

/** Decides the services of a command (see the header). */
export async function resolveServices(
  config: Config = loadConfig(),
  options: ResolveServicesOptions = {},
): Promise<Services> {
  if (!config.defaultServices) {
    return { config, embedded: undefined, summary: describeMode(config) };
  }
  // The defaults (ONCEQ_REDIS_PORT and ONCEQ_PG_PORT move their ports).
  const redis = new URL(config.redisUrl ?? DEFAULT_REDIS_URL);
  const database = new URL(config.databaseUrl);
  const port = Number(database.port || 5432);
  const name = database.pathname.replace(/^\//, '') || 'onceq';
  const dataDir = path.resolve(config.dataDir);
  const [redisUp, databaseUp, ours] = await Promise.all([
    isPortAnswering(redis.hostname, Number(redis.port || 6379), PROBE_TIMEOUT_MS),
    isPortAnswering(database.hostname, port, PROBE_TIMEOUT_MS),
    // A server of an earlier `onceq start` on the data folder (running, or orphaned by a kill):
    // the port answering is then that server, not a PostgreSQL of the machine's.
    hasEmbeddedServer(dataDir),
  ]);
  const pointAt = 'set DATABASE_URL (and REDIS_URL) to use servers of your own';
  if (options.embedded && (ours || !databaseUp)) {
    const summary =
      `embedded PostgreSQL on 127.0.0.1:${port} (data in ${dataDir}), PostgreSQL-only mode: ` +
      `no DATABASE_URL or REDIS_URL set and no PostgreSQL answered; ${pointAt}`;
    // The first line of the process: what it runs on, and how to point it at real servers.
    options.logger?.info({ mode: 'postgres', embedded: true, dataDir }, summary);
    const embedded = await startEmbeddedPostgres({
      dataDir,
      port,
      database: name,
      logger: options.logger,
    });
    // Embedded means PostgreSQL alone: a Redis that happens to answer is not this store's.
    return {
      config: { ...config, databaseUrl: embedded.url, redisUrl: undefined },
      embedded,
      summary,
      announced: true,
    };
  }
  // Beside a running `onceq start` with an embedded PostgreSQL: its server, PostgreSQL alone.
  const embeddedUrl = ours
    ? await runningEmbeddedUrl({ dataDir, port, database: name })
    : undefined;
  if (embeddedUrl !== undefined) {
    return {
      config: { ...config, databaseUrl: embeddedUrl, redisUrl: undefined },
      embedded: undefined,
      summary: `the embedded PostgreSQL of onceq start (data in ${dataDir}), PostgreSQL-only mode; ${pointAt}`,
    };
  }
  const resolved: Config = redisUp ? config : { ...config, redisUrl: undefined };
  return {
    config: resolved,
    embedded: undefined,
    summary: `${describeMode(resolved)} (no REDIS_URL or DATABASE_URL set: the default ports${
      redisUp ? '' : `; nothing answered on ${redis.host}`
    })`,
  };
}

/** The mode of a configuration, in words. */
export function describeMode(config: Config): string {
  if (queueMode(config) === 'postgres') {
    return 'PostgreSQL-only mode (no REDIS_URL): queues and tokens in PostgreSQL';
  }
  return config.redisClusterNodes
    ? `Redis mode on a Redis Cluster (REDIS_CLUSTER_NODES, ${config.redisClusterNodes.length} ` +
        'startup nodes): queues and tokens in Redis'
    : 'Redis mode: queues and tokens in Redis';
}
