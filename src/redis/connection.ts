/**
 * Redis connections. BullMQ's blocking worker connection needs `maxRetriesPerRequest: null`;
 * onceq uses the same settings everywhere so a Redis restart is ridden out by reconnecting
 * rather than failing commands.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { ClusterNode } from '../core/cluster-nodes.js';
import { redactUrl } from '../core/redact-url.js';
import { ServiceUnreachableError } from '../core/errors.js';
import { withTimeout } from '../core/with-timeout.js';

/**
 * A connection to Redis: one server, or a Redis Cluster (ioredis `Cluster`). Everything onceq
 * sends keeps to one hash slot per command or script, so every component runs on either.
 */
export type RedisClient = Redis | Cluster;

export type { ClusterNode };

/** Options of {@link createRedis}. */
export interface RedisConnectionOptions {
  url: string;
  /** Connection name shown by `CLIENT LIST`. @defaultValue `onceq` */
  connectionName?: string;
  /**
   * Give up instead of reconnecting forever: for CLI commands and start-up checks that should
   * say "unreachable" rather than wait forever. After a few failed connection attempts the
   * client ends and every command waiting for it fails. @defaultValue false
   */
  failFast?: boolean;
}

/** Creates an ioredis client that reconnects forever with a capped backoff. */
export function createRedis(options: RedisConnectionOptions): Redis {
  const redisOptions: RedisOptions = {
    connectionName: options.connectionName ?? 'onceq',
    maxRetriesPerRequest: options.failFast ? 1 : null,
    // Always on, failFast included: the client connects lazily, and so does every
    // `duplicate()` of it (the producer's token connection, BullMQ's own), whose first command
    // must wait for the connection rather than fail with "Stream isn't writeable". failFast is
    // bounded by the retry strategy instead: when it gives up, the queued commands are rejected.
    enableOfflineQueue: true,
    retryStrategy: (times) => retryDelay(times, options.failFast),
    lazyConnect: true,
  };
  const redis = new Redis(options.url, redisOptions);
  // Connection errors are reported by checkRedis and by the commands that fail; without a
  // listener ioredis would print each reconnect attempt as an unhandled error.
  redis.on('error', () => undefined);
  return redis;
}

/** Options of {@link createRedisCluster}. */
export interface RedisClusterConnectionOptions {
  /** Startup nodes; the client learns the rest of the cluster from them. */
  nodes: readonly ClusterNode[];
  /** Connection name shown by `CLIENT LIST` on every node. @defaultValue `onceq` */
  connectionName?: string;
  /** As {@link RedisConnectionOptions.failFast}. @defaultValue false */
  failFast?: boolean;
}

/**
 * Creates an ioredis `Cluster` with the same behaviour as {@link createRedis}: lazy, offline
 * queue on, reconnecting forever (or giving up soon with `failFast`), and commands that wait
 * out a failover (`MOVED`/`TRYAGAIN`/`CLUSTERDOWN` are retried by ioredis) instead of failing.
 */
export function createRedisCluster(options: RedisClusterConnectionOptions): Cluster {
  const clusterOptions: ClusterOptions = {
    lazyConnect: true,
    enableOfflineQueue: true,
    clusterRetryStrategy: (times) => retryDelay(times, options.failFast),
    // A failover takes the cluster's node timeout and an election; commands sent meanwhile are
    // retried on the new owner of their slot rather than failed.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 300,
    retryDelayOnTryAgain: 200,
    slotsRefreshTimeout: 2_000,
    // Off: ioredis's ready check makes `connect()` hang. When a connect meets a cluster whose
    // state is `fail` (a shard down whole), the check fails, the client reconnects on its own,
    // and the promise that first `connect()` returned is never settled, even once the cluster is
    // back and the client ready. BullMQ awaits that promise when it reconnects a worker's
    // blocking connection, so the worker stopped taking jobs for good after a shard outage.
    // Without the check the client is ready once it knows the slots, and a command sent while
    // the cluster is down gets CLUSTERDOWN, which is retried (retryDelayOnClusterDown) and then
    // fails like any other command meeting a down Redis.
    enableReadyCheck: false,
    redisOptions: {
      connectionName: options.connectionName ?? 'onceq',
      maxRetriesPerRequest: options.failFast ? 1 : null,
    },
  };
  const cluster = new Cluster(
    options.nodes.map((n) => ({ host: n.host, port: n.port })),
    clusterOptions,
  );
  cluster.on('error', () => undefined);
  return cluster;
}

/**
 * A connection to a Redis URL, or to the cluster these startup nodes belong to: the one choice
 * between {@link createRedis} and {@link createRedisCluster}.
 */
export function createRedisClient(
  target: string | readonly ClusterNode[],
  options: { connectionName?: string; failFast?: boolean } = {},
): RedisClient {
  return typeof target === 'string'
    ? createRedis({ url: target, ...options })
    : createRedisCluster({ nodes: target, ...options });
}

function retryDelay(times: number, failFast: boolean | undefined): number | null {
  return failFast && times > 2 ? null : Math.min(times * 100, 2_000);
}

/**
 * What is wrong with a caller's own ioredis `Cluster` for onceq, or `undefined`: its ready check
 * is on (ioredis's default), which leaves a worker stuck after a shard outage; see
 * {@link createRedisCluster}.
 */
export function clusterOptionsProblem(redis: RedisClient): string | undefined {
  if (!isCluster(redis)) return undefined;
  const enableReadyCheck = (redis as unknown as { options?: { enableReadyCheck?: boolean } })
    .options?.enableReadyCheck;
  return enableReadyCheck === false
    ? undefined
    : 'the ioredis Cluster was made with its ready check on (enableReadyCheck, on by default): ' +
        'a worker on it can stop taking jobs for good after a shard of the cluster was down; ' +
        'make it with `enableReadyCheck: false`';
}

/** Whether a connection is to a Redis Cluster (duck-typed: another copy of ioredis counts). */
export function isCluster(redis: RedisClient): redis is Cluster {
  return (redis as { isCluster?: unknown }).isCluster === true;
}

/**
 * A second connection like `redis` with some options changed (the two classes spell
 * `duplicate` differently): the token store's auto-pipelined connection.
 */
export function duplicateRedis(
  redis: RedisClient,
  overrides: { enableAutoPipelining?: boolean; lazyConnect?: boolean },
): RedisClient {
  const copy = isCluster(redis)
    ? redis.duplicate(undefined, overrides)
    : redis.duplicate(overrides);
  copy.on('error', () => undefined);
  return copy;
}

/** Where a connection points, for messages (never with its password). */
export function describeRedis(redis: RedisClient): string {
  if (isCluster(redis)) {
    const { startupNodes } = redis as unknown as {
      startupNodes: (string | number | { host?: string; port?: number })[];
    };
    const nodes = startupNodes
      .map((n) =>
        typeof n === 'object' ? `${n.host ?? '127.0.0.1'}:${n.port ?? 6379}` : String(n),
      )
      .join(',');
    return `redis cluster ${nodes}`;
  }
  const { host, port } = redis.options;
  return `redis://${host ?? '127.0.0.1'}:${port ?? 6379}`;
}

/** Connects and pings; turns a failure into one line naming Redis, where, and how to start it. */
export async function checkRedis(redis: RedisClient, url: string): Promise<void> {
  // ioredis rejects `connect()` with a bare "Connection is closed."; the socket's own error
  // (ECONNREFUSED, ENOTFOUND, NOAUTH …) comes as an 'error' event and says what is wrong.
  let socketError: Error | undefined;
  const onError = (err: Error) => {
    socketError ??= err;
  };
  redis.on('error', onError);
  try {
    // A cluster's connect() can hang (see createRedisCluster), a single Redis's only waits for
    // a server still loading its data, which it always did.
    if (redis.status === 'wait') {
      await (isCluster(redis) ? withTimeout(redis.connect(), 5_000) : redis.connect());
    }
    await withTimeout(redis.ping(), 5_000);
  } catch (err) {
    const reason = describeReason(socketError ?? err);
    throw new ServiceUnreachableError(
      isCluster(redis)
        ? `the Redis Cluster is not reachable at ${url} (${reason}); ` +
            'start it or set REDIS_CLUSTER_NODES to nodes of a running cluster'
        : `Redis is not reachable at ${redactUrl(url)} (${reason}); ` +
            'start it (`docker compose up -d redis`) or set REDIS_URL',
      err,
    );
  } finally {
    redis.off('error', onError);
  }
}

/** One line: the message, or the code when the message is empty (a Node AggregateError). */
function describeReason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const text = err.message || (err as { code?: string }).code || err.name;
  return text.replace(/\s*\n\s*/g, ' ');
}

/** Closes a connection, falling back to disconnect when QUIT cannot be sent. */
export async function closeRedis(redis: RedisClient): Promise<void> {
  if (redis.status === 'end') return;
  try {
    await withTimeout(redis.quit(), 2_000);
  } catch {
    redis.disconnect();
  }
}
