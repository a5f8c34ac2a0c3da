/**
 * Configuration, for the CLI only: the environment becomes one frozen, validated `Config`, and
 * then the options of the library's `createWorker` and `createProducer`, which is all the CLI
 * runs on. Nothing else in onceq reads `process.env`. Every bad value is reported at once, one
 * line each, naming the variable.
 */
import type { Logger } from 'pino';
import { ConfigError } from './core/errors.js';
import type { JobDefinition } from './jobs/define-job.js';
import type { ConnectionOptions, ProducerOptions, WorkerOptions } from './lib/options.js';
import { formatDuration, parseDuration } from './core/duration.js';
import { isWellFormedApiKey } from './core/api-key.js';
import {
  DEFAULT_MAX_OUTSTANDING_TOKENS,
  MAX_GROUP_COMMIT_GROUPS,
  MAX_GROUP_COMMIT_LOCK_TIMEOUT_MS,
  MAX_GROUP_COMMIT_SIZE,
  MAX_ISSUE_COUNT,
} from './core/limits.js';
import {
  DEFAULT_AUTH_FAILURE_LIMIT,
  DEFAULT_BODY_LIMIT,
  DEFAULT_CONCURRENCY,
  DEFAULT_DATABASE_URL,
  DEFAULT_DEDUPE_WINDOW_MS,
  DEFAULT_HOST,
  DEFAULT_LOCK_DURATION_MS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_OUTBOX_INTERVAL_MS,
  DEFAULT_POOL_SIZE,
  DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS,
  DEFAULT_COMPLETED_JOB_RETENTION_MS,
  DEFAULT_GROUP_COMMIT_MAX_GROUPS,
  DEFAULT_GROUP_COMMIT_MAX_SIZE,
  DEFAULT_PORT,
  DEFAULT_PREFIX,
  DEFAULT_PRUNE_INTERVAL_MS,
  DEFAULT_RATE_LIMIT,
  DEFAULT_RECONCILE_GRACE_MS,
  DEFAULT_RECONCILE_INTERVAL_MS,
  DEFAULT_REDIS_URL,
  DEFAULT_DATA_DIR,
  DEFAULT_SHUTDOWN_TIMEOUT_MS,
  DEFAULT_STATEMENT_TIMEOUT_MS,
  DEFAULT_TOKEN_TTL_MS,
} from './core/defaults.js';
import { parseClusterNodes, type ClusterNode } from './core/cluster-nodes.js';
import { QUEUE_NAME, QUEUE_NAME_RULE } from './core/queue-name.js';
import { redactUrl } from './core/redact-url.js';
import { combinationProblems, MIN_DURATION_MS, type TimingSettings } from './core/settings.js';

/** Log levels pino understands. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The validated configuration of one onceq process. */
export interface Config {
  /**
   * `REDIS_URL`; `undefined` for PostgreSQL-only mode, which is what `DATABASE_URL` alone asks
   * for. With neither set, `redis://127.0.0.1:6379` if it answers (see cli/services.ts).
   */
  readonly redisUrl: string | undefined;
  /**
   * `REDIS_CLUSTER_NODES` (`host:port,host:port,…`): Redis mode on a Redis Cluster, whose
   * startup nodes these are; `REDIS_URL` is then not used (and {@link redisUrl} is `undefined`).
   */
  readonly redisClusterNodes: readonly ClusterNode[] | undefined;
  /**
   * None of `REDIS_URL`, `REDIS_CLUSTER_NODES` and `DATABASE_URL` is set: the command looks at what answers on the
   * default ports (and `onceq start` starts an embedded PostgreSQL when nothing does).
   */
  readonly defaultServices: boolean;
  /**
   * `ONCEQ_DATA_DIR`: where `onceq start` keeps the embedded PostgreSQL's data (used only when
   * it starts one). @defaultValue `./.onceq/pg`
   */
  readonly dataDir: string;
  /**
   * `DATABASE_URL`. @defaultValue `postgres://postgres@127.0.0.1:5432/onceq` (`ONCEQ_PG_PORT`
   * moves the port: where `onceq start` looks for a PostgreSQL, and runs the embedded one)
   */
  readonly databaseUrl: string;
  /** `ONCEQ_DB_SCHEMA`: PostgreSQL schema for onceq's tables. @defaultValue `public` */
  readonly databaseSchema: string;
  /** `ONCEQ_DB_POOL_SIZE`: connections per process. @defaultValue 10 */
  readonly poolSize: number;
  /** `PORT`: the HTTP port of the API. @defaultValue 3000 */
  readonly port: number;
  /** `ONCEQ_PREFIX`: prefix of every Redis key (BullMQ's and onceq's). @defaultValue `onceq` */
  readonly prefix: string;
  /** `ONCEQ_QUEUES`: queues a worker consumes; empty means every queue a registered job uses. */
  readonly queues: readonly string[];
  /** `ONCEQ_CONCURRENCY`: jobs in flight per worker process. @defaultValue 10 */
  readonly concurrency: number;
  /** `ONCEQ_MAX_ATTEMPTS`: deliveries before a job fails for good. @defaultValue 10 */
  readonly maxAttempts: number;
  /** `ONCEQ_LOCK_DURATION`: BullMQ job lock, and the minimum claim lease. @defaultValue 30 s */
  readonly lockDurationMs: number;
  /** `ONCEQ_TOKEN_TTL`: lifetime of issued tokens and of `done` markers. @defaultValue 24 h */
  readonly tokenTtlMs: number;
  /** `ONCEQ_DEDUPE_WINDOW`: how long inbox rows are kept. @defaultValue 7 d */
  readonly dedupeWindowMs: number;
  /** `ONCEQ_RECONCILE_INTERVAL`: between two reconciler passes (one process at a time). @defaultValue 60 s */
  readonly reconcileIntervalMs: number;
  /**
   * `ONCEQ_RECONCILE_GRACE`: how old an accepted message must be before the reconciler
   * re-enqueues it for want of a job. @defaultValue 120 s
   */
  readonly reconcileGraceMs: number;
  /** `ONCEQ_PRUNE_INTERVAL`: between two dedupe-window pruning passes. @defaultValue 10 min */
  readonly pruneIntervalMs: number;
  /** `ONCEQ_OUTBOX_INTERVAL`: between two outbox relay runs (commits also wake it). @defaultValue 1 s */
  readonly outboxIntervalMs: number;
  /**
   * `ONCEQ_GROUP_COMMIT` (`on`, `off` or `savepoints`), `ONCEQ_GROUP_MAX_SIZE`,
   * `ONCEQ_GROUP_MAX_GROUPS`, `ONCEQ_GROUP_LOCK_TIMEOUT`: the worker's group commit, or `false`.
   * @defaultValue on: 50 messages, 2 groups in flight, no savepoints, 100 ms
   */
  /** `ONCEQ_COMPLETED_JOB_RETENTION`: completed jobs kept in Redis. @defaultValue 24 h */
  readonly completedJobRetentionMs: number;
  readonly groupCommit:
    { maxSize: number; maxGroups: number; savepoints: boolean; lockTimeoutMs: number } | false;
  /**
   * `ONCEQ_STATEMENT_TIMEOUT`: `statement_timeout` of the worker's PostgreSQL sessions; 0 turns it
   * off. A statement that hangs (a lock never released, a stuck server) fails after this long, so
   * the delivery rolls back and is retried instead of renewing its claim forever. @defaultValue 60 s
   */
  readonly statementTimeoutMs: number;
  /** `ONCEQ_SHUTDOWN_TIMEOUT`: bound on finishing in-flight jobs at SIGTERM. @defaultValue 10 s */
  readonly shutdownTimeoutMs: number;
  /** `ONCEQ_JOBS`: path of a module whose exports are user job definitions. */
  readonly jobsModule: string | undefined;
  /** `LOG_LEVEL`. @defaultValue `info` */
  readonly logLevel: LogLevel;
  /** `ONCEQ_FAULT`: test-only crash point (see worker/fault-hook.ts); unset in production. */
  readonly fault: string | undefined;
  /** `ONCEQ_HOST`: the address the API listens on. @defaultValue `0.0.0.0` (every interface) */
  readonly host: string;
  /** `ONCEQ_BODY_LIMIT`: largest API request body, in bytes. @defaultValue 1 MiB */
  readonly bodyLimit: number;
  /**
   * `ONCEQ_RATE_LIMIT`: API requests per principal per window, as `N` (per minute) or
   * `N/<duration>` (`100/1s`, `6000/m`); `0` turns the limit off. @defaultValue 60000/m
   */
  readonly rateLimit: { readonly max: number; readonly windowMs: number };
  /**
   * `ONCEQ_MAX_UNUSED_TOKENS`: most tokens a principal may hold issued and neither used nor
   * expired; `POST /v1/tokens` answers 429 past it. At least 100 (one request's most); `0`
   * turns the bound off. @defaultValue 10,000
   */
  readonly maxOutstandingTokens: number;
  /**
   * `ONCEQ_AUTH_FAILURE_LIMIT`: failed authentications (well-formed keys that are unknown,
   * revoked or wrong) per client address per window, as `N` (per minute) or `N/<duration>`;
   * past it the address gets 429 before any key is looked up, until its window ends. `0` turns
   * the limit off. @defaultValue 100/m
   */
  readonly authFailureLimit: { readonly max: number; readonly windowMs: number };
  /**
   * `ONCEQ_METRICS_PORT`: port of the Prometheus `/metrics` endpoint of a worker process (on
   * `ONCEQ_HOST`); `0` picks a free port. Unset: worker processes serve no metrics (the API
   * serves its own at `/metrics` on `PORT`). @defaultValue unset
   */
  readonly metricsPort: number | undefined;
  /** `ONCEQ_API_URL`: the producer API that `onceq demo` drives. @defaultValue unset */
  readonly apiUrl: string | undefined;
  /** `ONCEQ_API_KEY`: the API key `onceq demo` sends. A secret: never logged. @defaultValue unset */
  readonly apiKey: string | undefined;
}

// The defaults, for the CLI's callers that read them beside the environment's names.
export * from './core/defaults.js';
export { QUEUE_NAME, QUEUE_NAME_RULE } from './core/queue-name.js';
export { redactUrl } from './core/redact-url.js';

type Env = Record<string, string | undefined>;

/** `url` with another port. */
function withPort(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.port = String(port);
  return parsed.href;
}

/** Reads and validates the configuration; throws one `ConfigError` listing every bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const read = (name: string): string | undefined => {
    const value = env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  };

  const url = (name: string, fallback: string, protocols: string[]): string => {
    const value = read(name) ?? fallback;
    try {
      const parsed = new URL(value);
      if (!protocols.includes(parsed.protocol)) {
        problems.push(`${name}=${redactUrl(value)}: expected a ${protocols.join(' or ')} URL`);
      }
    } catch {
      problems.push(`${name}: not a URL`);
    }
    return value;
  };

  const int = (name: string, fallback: number, min: number, max: number): number => {
    const value = read(name);
    if (value === undefined) return fallback;
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      problems.push(`${name}=${value}: expected an integer from ${min} to ${max}`);
      return fallback;
    }
    return Number(value);
  };

  // Variables already reported as bad: the combinations below are checked on good values only.
  const bad = new Set<string>();
  const duration = (name: string, fallback: number, minMs: number): number => {
    const value = read(name);
    if (value === undefined) return fallback;
    const ms = parseDuration(value);
    if (ms === undefined || ms < minMs) {
      bad.add(name);
      problems.push(
        `${name}=${value}: expected a duration of at least ${formatDuration(minMs)} ` +
          `such as 30s, 5m, 24h or 7d (a bare number means seconds)`,
      );
      return fallback;
    }
    return ms;
  };

  const name = (varName: string, fallback: string, pattern: RegExp, what: string): string => {
    const value = read(varName) ?? fallback;
    if (!pattern.test(value)) problems.push(`${varName}=${value}: expected ${what}`);
    return value;
  };

  const lockTimeout = (): number => {
    const ms = duration('ONCEQ_GROUP_LOCK_TIMEOUT', DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS, 1);
    if (ms > MAX_GROUP_COMMIT_LOCK_TIMEOUT_MS) {
      problems.push(
        `ONCEQ_GROUP_LOCK_TIMEOUT=${read('ONCEQ_GROUP_LOCK_TIMEOUT')}: expected at most ` +
          `${formatDuration(MAX_GROUP_COMMIT_LOCK_TIMEOUT_MS)} (a bare number means seconds)`,
      );
      return DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS;
    }
    return ms;
  };
  const groupCommit = (): Config['groupCommit'] => {
    const mode = read('ONCEQ_GROUP_COMMIT')?.toLowerCase() ?? 'on';
    if (!['on', 'off', 'savepoints'].includes(mode)) {
      problems.push(`ONCEQ_GROUP_COMMIT=${mode}: expected on, off or savepoints`);
    }
    const settings = {
      maxSize: int('ONCEQ_GROUP_MAX_SIZE', DEFAULT_GROUP_COMMIT_MAX_SIZE, 1, MAX_GROUP_COMMIT_SIZE),
      maxGroups: int(
        'ONCEQ_GROUP_MAX_GROUPS',
        DEFAULT_GROUP_COMMIT_MAX_GROUPS,
        1,
        MAX_GROUP_COMMIT_GROUPS,
      ),
      savepoints: mode === 'savepoints',
      lockTimeoutMs: lockTimeout(),
    };
    return mode === 'off' ? false : settings;
  };

  const queuesText = read('ONCEQ_QUEUES');
  const queues = queuesText
    ? queuesText
        .split(',')
        .map((q) => q.trim())
        .filter(Boolean)
    : [];
  for (const q of queues) {
    if (!QUEUE_NAME.test(q))
      problems.push(`ONCEQ_QUEUES: "${q}" is not a valid queue name (${QUEUE_NAME_RULE})`);
  }

  /** `N` (per minute) or `N/<duration>`, the window at least 1 s; `0` is "off". */
  const perWindow = (
    varName: string,
    fallback: { max: number; windowMs: number },
    what: string,
  ): { max: number; windowMs: number } => {
    const value = read(varName);
    if (value === undefined) return { ...fallback };
    const match = /^(\d{1,9})(?:\s*\/\s*(\d*)\s*(ms|s|m|h|d)?)?$/.exec(value);
    const windowText = match?.[2] || match?.[3] ? `${match[2] || '1'}${match[3] ?? 's'}` : '1m';
    const windowMs = match ? parseDuration(windowText) : undefined;
    if (!match || windowMs === undefined || windowMs < 1_000) {
      problems.push(
        `${varName}=${value}: expected ${what} as N (per minute) or ` +
          'N/<duration> such as 100/1s or 6000/m (window at least 1s); 0 turns it off',
      );
      return { ...fallback };
    }
    return { max: Number(match[1]), windowMs };
  };
  const rateLimit = () =>
    perWindow('ONCEQ_RATE_LIMIT', DEFAULT_RATE_LIMIT, 'requests per principal');

  const maxOutstandingTokens = (): number => {
    const value = read('ONCEQ_MAX_UNUSED_TOKENS');
    if (value === undefined) return DEFAULT_MAX_OUTSTANDING_TOKENS;
    const n = /^\d{1,9}$/.test(value) ? Number(value) : NaN;
    if (n !== 0 && !(n >= MAX_ISSUE_COUNT && n <= 100_000_000)) {
      problems.push(
        `ONCEQ_MAX_UNUSED_TOKENS=${value}: expected an integer from ${MAX_ISSUE_COUNT} ` +
          '(one request may ask for that many) to 100000000, or 0 for no bound',
      );
      return DEFAULT_MAX_OUTSTANDING_TOKENS;
    }
    return n;
  };

  const optionalInt = (name: string, min: number, max: number): number | undefined =>
    read(name) === undefined ? undefined : int(name, min, min, max);

  const apiUrl = read('ONCEQ_API_URL');
  if (apiUrl !== undefined) url('ONCEQ_API_URL', apiUrl, ['http:', 'https:']);
  const apiKey = read('ONCEQ_API_KEY');
  // The value is a secret: the message names the variable and the expected shape only.
  if (apiKey !== undefined && !isWellFormedApiKey(apiKey)) {
    problems.push('ONCEQ_API_KEY: not a well-formed API key (oqk_…, as printed by keys create)');
  }

  const logLevel = (read('LOG_LEVEL') ?? 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    problems.push(`LOG_LEVEL=${logLevel}: expected one of ${LOG_LEVELS.join(', ')}`);
  }

  const clusterText = read('REDIS_CLUSTER_NODES');
  let redisClusterNodes: ClusterNode[] | undefined;
  if (clusterText !== undefined) {
    const parsed = parseClusterNodes(clusterText.split(',').filter((n) => n.trim() !== ''));
    for (const problem of parsed.problems) problems.push(`REDIS_CLUSTER_NODES: ${problem}`);
    redisClusterNodes = parsed.nodes;
  }

  const config: Config = {
    redisClusterNodes,
    // With a cluster, REDIS_URL is not used: one Redis mode, one place its keys live.
    redisUrl:
      redisClusterNodes !== undefined
        ? undefined
        : read('REDIS_URL') !== undefined || read('DATABASE_URL') === undefined
          ? url('REDIS_URL', withPort(DEFAULT_REDIS_URL, int('ONCEQ_REDIS_PORT', 6379, 1, 65535)), [
              'redis:',
              'rediss:',
            ])
          : undefined,
    defaultServices:
      redisClusterNodes === undefined &&
      read('REDIS_URL') === undefined &&
      read('DATABASE_URL') === undefined,
    dataDir: read('ONCEQ_DATA_DIR') ?? DEFAULT_DATA_DIR,
    databaseUrl: url(
      'DATABASE_URL',
      withPort(DEFAULT_DATABASE_URL, int('ONCEQ_PG_PORT', 5432, 1, 65535)),
      ['postgres:', 'postgresql:'],
    ),
    databaseSchema: name(
      'ONCEQ_DB_SCHEMA',
      'public',
      /^[a-z_][a-z0-9_]{0,62}$/,
      'a lower-case SQL identifier',
    ),
    poolSize: int('ONCEQ_DB_POOL_SIZE', DEFAULT_POOL_SIZE, 1, 1000),
    port: int('PORT', DEFAULT_PORT, 0, 65535),
    prefix: name(
      'ONCEQ_PREFIX',
      DEFAULT_PREFIX,
      /^[A-Za-z0-9_.-]{1,64}$/,
      'letters, digits, _ . - (no ":" or braces)',
    ),
    // Frozen too: `Object.freeze(config)` is shallow, and a caller pushing onto the list would
    // change the queues every other reader of this Config sees.
    queues: Object.freeze(queues),
    concurrency: int('ONCEQ_CONCURRENCY', DEFAULT_CONCURRENCY, 1, 10_000),
    maxAttempts: int('ONCEQ_MAX_ATTEMPTS', DEFAULT_MAX_ATTEMPTS, 1, 1_000),
    lockDurationMs: duration(
      'ONCEQ_LOCK_DURATION',
      DEFAULT_LOCK_DURATION_MS,
      MIN_DURATION_MS.lockDurationMs,
    ),
    tokenTtlMs: duration('ONCEQ_TOKEN_TTL', DEFAULT_TOKEN_TTL_MS, MIN_DURATION_MS.tokenTtlMs),
    dedupeWindowMs: duration(
      'ONCEQ_DEDUPE_WINDOW',
      DEFAULT_DEDUPE_WINDOW_MS,
      MIN_DURATION_MS.dedupeWindowMs,
    ),
    reconcileIntervalMs: duration(
      'ONCEQ_RECONCILE_INTERVAL',
      DEFAULT_RECONCILE_INTERVAL_MS,
      MIN_DURATION_MS.reconcileIntervalMs,
    ),
    reconcileGraceMs: duration(
      'ONCEQ_RECONCILE_GRACE',
      DEFAULT_RECONCILE_GRACE_MS,
      MIN_DURATION_MS.reconcileGraceMs,
    ),
    pruneIntervalMs: duration(
      'ONCEQ_PRUNE_INTERVAL',
      DEFAULT_PRUNE_INTERVAL_MS,
      MIN_DURATION_MS.pruneIntervalMs,
    ),
    outboxIntervalMs: duration(
      'ONCEQ_OUTBOX_INTERVAL',
      DEFAULT_OUTBOX_INTERVAL_MS,
      MIN_DURATION_MS.outboxIntervalMs,
    ),
    statementTimeoutMs: duration(
      'ONCEQ_STATEMENT_TIMEOUT',
      DEFAULT_STATEMENT_TIMEOUT_MS,
      MIN_DURATION_MS.statementTimeoutMs,
    ),
    shutdownTimeoutMs: duration(
      'ONCEQ_SHUTDOWN_TIMEOUT',
      DEFAULT_SHUTDOWN_TIMEOUT_MS,
      MIN_DURATION_MS.shutdownTimeoutMs,
    ),
    groupCommit: groupCommit(),
    completedJobRetentionMs: duration(
      'ONCEQ_COMPLETED_JOB_RETENTION',
      DEFAULT_COMPLETED_JOB_RETENTION_MS,
      1_000,
    ),
    jobsModule: read('ONCEQ_JOBS'),
    logLevel: logLevel as LogLevel,
    fault: read('ONCEQ_FAULT'),
    host: name('ONCEQ_HOST', DEFAULT_HOST, /^[A-Za-z0-9.:_-]{1,253}$/, 'a host name or IP address'),
    bodyLimit: int('ONCEQ_BODY_LIMIT', DEFAULT_BODY_LIMIT, 1_024, 100 * 1_048_576),
    rateLimit: Object.freeze(rateLimit()),
    maxOutstandingTokens: maxOutstandingTokens(),
    authFailureLimit: Object.freeze(
      perWindow(
        'ONCEQ_AUTH_FAILURE_LIMIT',
        DEFAULT_AUTH_FAILURE_LIMIT,
        'failed authentications per client address',
      ),
    ),
    metricsPort: optionalInt('ONCEQ_METRICS_PORT', 0, 65535),
    apiUrl,
    apiKey,
  };
  problems.push(
    ...combinationProblems(config, {
      name: (setting) => TIMING_VARIABLES[setting],
      isBad: (setting) => bad.has(TIMING_VARIABLES[setting]),
      isSet: (setting) => read(TIMING_VARIABLES[setting]) !== undefined,
    }),
  );
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/** The environment variable of each timing setting, for the combination messages. */
const TIMING_VARIABLES: Record<keyof TimingSettings, string> = {
  lockDurationMs: 'ONCEQ_LOCK_DURATION',
  tokenTtlMs: 'ONCEQ_TOKEN_TTL',
  dedupeWindowMs: 'ONCEQ_DEDUPE_WINDOW',
  reconcileGraceMs: 'ONCEQ_RECONCILE_GRACE',
  statementTimeoutMs: 'ONCEQ_STATEMENT_TIMEOUT',
};

/** Whether a configuration runs on Redis (one server or a cluster) or on PostgreSQL alone. */
export function queueMode(
  config: Pick<Config, 'redisUrl' | 'redisClusterNodes'>,
): 'redis' | 'postgres' {
  return config.redisUrl !== undefined || config.redisClusterNodes !== undefined
    ? 'redis'
    : 'postgres';
}

/** The connection options every CLI component takes from the environment. */
function connectionOptions(config: Config, logger: Logger | undefined) {
  return {
    redis: config.redisClusterNodes ?? config.redisUrl,
    database: config.databaseUrl,
    prefix: config.prefix,
    schema: config.databaseSchema,
    poolSize: config.poolSize,
    logger,
  } satisfies Omit<ConnectionOptions, 'logger'> & { logger: Logger | undefined };
}

/** The environment as `createWorker` options, for `onceq worker` and `onceq start`. */
export function workerOptionsFrom(
  config: Config,
  jobs: readonly JobDefinition[],
  logger?: Logger,
): WorkerOptions {
  return {
    ...connectionOptions(config, logger),
    jobs,
    queues: config.queues.length ? config.queues : undefined,
    concurrency: config.concurrency,
    maxAttempts: config.maxAttempts,
    lockDurationMs: config.lockDurationMs,
    tokenTtlMs: config.tokenTtlMs,
    dedupeWindowMs: config.dedupeWindowMs,
    statementTimeoutMs: config.statementTimeoutMs,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    reconciler: { intervalMs: config.reconcileIntervalMs, graceMs: config.reconcileGraceMs },
    outbox: { intervalMs: config.outboxIntervalMs },
    pruner: { intervalMs: config.pruneIntervalMs },
    groupCommit: config.groupCommit && { ...config.groupCommit },
    completedJobRetentionMs: config.completedJobRetentionMs,
  };
}

/** The environment as `createProducer` options, for `onceq api` and `onceq enqueue`. */
export function producerOptionsFrom(
  config: Config,
  jobs: readonly JobDefinition[],
  logger?: Logger,
): ProducerOptions {
  return {
    ...connectionOptions(config, logger),
    jobs,
    maxAttempts: config.maxAttempts,
    tokenTtlMs: config.tokenTtlMs,
    dedupeWindowMs: config.dedupeWindowMs,
    maxUnusedTokens: config.maxOutstandingTokens,
  };
}
