/**
 * Redis connections. BullMQ's blocking worker connection needs `maxRetriesPerRequest: null`;
 * onceq uses the same settings everywhere so a Redis restart is ridden out by reconnecting
 * rather than failing commands.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { redactUrl } from '../core/redact-url.js';
import { ServiceUnreachableError } from '../core/errors.js';
import { withTimeout } from '../core/with-timeout.js';

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
    retryStrategy: (times) => (options.failFast && times > 2 ? null : Math.min(times * 100, 2_000)),
    lazyConnect: true,
  };
  const redis = new Redis(options.url, redisOptions);
  // Connection errors are reported by checkRedis and by the commands that fail; without a
  // listener ioredis would print each reconnect attempt as an unhandled error.
  redis.on('error', () => undefined);
  return redis;
}

/** Connects and pings; turns a failure into one line naming Redis, where, and how to start it. */
export async function checkRedis(redis: Redis, url: string): Promise<void> {
  // ioredis rejects `connect()` with a bare "Connection is closed."; the socket's own error
  // (ECONNREFUSED, ENOTFOUND, NOAUTH …) comes as an 'error' event and says what is wrong.
  let socketError: Error | undefined;
  const onError = (err: Error) => {
    socketError ??= err;
  };
  redis.on('error', onError);
  try {
    if (redis.status === 'wait') await redis.connect();
    await withTimeout(redis.ping(), 5_000);
  } catch (err) {
    const reason = describeReason(socketError ?? err);
    throw new ServiceUnreachableError(
      `Redis is not reachable at ${redactUrl(url)} (${reason}); ` +
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
export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'end') return;
  try {
    await withTimeout(redis.quit(), 2_000);
  } catch {
    redis.disconnect();
  }
}
