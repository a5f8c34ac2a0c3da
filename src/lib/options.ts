/**
 * The library's options: one object per component, every default documented here and merged
 * once, every value checked once at creation. A bad option is a `ConfigError` listing each bad
 * value on its own line, naming the option; a misspelt option is a type error (the option types
 * are plain interfaces, so an object literal with an unknown key does not compile) and, for
 * callers without types, an error at creation.
 */
import type { Cluster, Redis } from 'ioredis';
import type pg from 'pg';
import type { Logger } from 'pino';
import { ConfigError } from '../core/errors.js';
import { formatDuration } from '../core/duration.js';
import {
  DEFAULT_CONCURRENCY,
  DEFAULT_DEDUPE_WINDOW_MS,
  DEFAULT_LOCK_DURATION_MS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_OUTBOX_INTERVAL_MS,
  DEFAULT_POOL_SIZE,
  DEFAULT_PREFIX,
  DEFAULT_PRUNE_INTERVAL_MS,
  DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS,
  DEFAULT_COMPLETED_JOB_RETENTION_MS,
  DEFAULT_GROUP_COMMIT_MAX_GROUPS,
  DEFAULT_GROUP_COMMIT_MAX_SIZE,
  DEFAULT_RECONCILE_GRACE_MS,
  DEFAULT_RECONCILE_INTERVAL_MS,
  DEFAULT_SCHEMA,
  DEFAULT_SHUTDOWN_TIMEOUT_MS,
  DEFAULT_STATEMENT_TIMEOUT_MS,
  DEFAULT_TOKEN_TTL_MS,
} from '../core/defaults.js';
import {
  DEFAULT_MAX_OUTSTANDING_TOKENS,
  MAX_GROUP_COMMIT_GROUPS,
  MAX_GROUP_COMMIT_LOCK_TIMEOUT_MS,
  MAX_GROUP_COMMIT_SIZE,
  MAX_ISSUE_COUNT,
} from '../core/limits.js';
import { parseClusterNodes, type ClusterNode } from '../core/cluster-nodes.js';
import { QUEUE_NAME, QUEUE_NAME_RULE } from '../core/queue-name.js';
import { redactUrl } from '../core/redact-url.js';
import { combinationProblems, MIN_DURATION_MS, type TimingSettings } from '../core/settings.js';
import { isJobDefinition, type JobDefinition } from '../jobs/define-job.js';
import { clusterOptionsProblem } from '../redis/connection.js';

/** Where onceq's state lives: what every component needs. */
export interface ConnectionOptions {
  /**
   * Redis: a `redis://` or `rediss://` URL, for a connection onceq opens and closes; a Redis
   * Cluster's startup nodes (`'host:port'` strings or `{ host, port }`), for a cluster
   * connection onceq opens and closes; or an ioredis `Redis` or `Cluster` instance, which onceq
   * uses (and duplicates) but never closes, as BullMQ does. A worker needs an instance made with
   * `maxRetriesPerRequest: null` (a `Cluster`: in its `redisOptions`), as BullMQ's workers do,
   * and a `Cluster` made with `enableReadyCheck: false` (ioredis's ready check can leave a worker
   * waiting forever after a shard of the cluster was down; createWorker refuses one without it).
   * On a cluster each queue's keys carry a hash tag of their own (`onceq:{ledger}:…`), so the
   * queues spread over the masters; nothing else changes.
   * Without it, onceq runs on PostgreSQL alone: BullMQ on its PostgreSQL backend (its tables in
   * the schema named by `prefix`) and the tokens in a table of onceq's schema.
   * @defaultValue none: PostgreSQL-only mode
   */
  redis?: string | Redis | Cluster | readonly (string | ClusterNode)[];
  /**
   * PostgreSQL: a `postgres://` URL, for a pool onceq opens and ends, or a `pg.Pool`, which
   * onceq never ends. Each session onceq takes from a given pool gets onceq's `search_path`
   * and timeouts, and keeps them: give onceq a pool of its own.
   */
  database: string | pg.Pool;
  /**
   * Namespaces the queues: the prefix of every Redis key, BullMQ's and onceq's, or in
   * PostgreSQL-only mode the schema of BullMQ's tables. Letters, digits, `_ . -`.
   * @defaultValue `'onceq'`
   */
  prefix?: string;
  /**
   * PostgreSQL schema of onceq's tables (the `search_path` of onceq's sessions, so a handler's
   * unqualified table names resolve there too). @defaultValue `'public'`
   */
  schema?: string;
  /** Connections of the pool onceq opens for a `database` URL. @defaultValue `10` */
  poolSize?: number;
  /** A pino logger for onceq's own lines (start, stop, lost leases, failures). @defaultValue none */
  logger?: Logger;
}

/** The reconciler: re-enqueues accepted messages whose job Redis lost. */
export interface ReconcilerOptions {
  /** Between two passes (one process of the fleet at a time). @defaultValue `60_000` (60 s) */
  intervalMs?: number;
  /**
   * How old an accepted message without a job must be before it is re-enqueued; below
   * `dedupeWindowMs`. @defaultValue `120_000` (120 s)
   */
  graceMs?: number;
}

/** The outbox relay: sends the follow-ups (`ctx.enqueue`) of committed messages. */
export interface OutboxOptions {
  /** Between two relay runs; each commit with follow-ups also wakes it. @defaultValue `1_000` (1 s) */
  intervalMs?: number;
}

/** The pruner: deletes inbox rows and acceptance records older than the dedupe window. */
export interface PrunerOptions {
  /** Between two pruning passes. @defaultValue `600_000` (10 min) */
  intervalMs?: number;
}

/**
 * Group commit: the worker's concurrent deliveries share one transaction, one inbox insert and
 * one `COMMIT` (each message still commits all or nothing; see the README's "Group commit").
 */
export interface GroupCommitOptions {
  /** Most messages in one transaction. @defaultValue `50` */
  maxSize?: number;
  /**
   * Groups in flight at once, each on a connection of the pool while it runs (a small pool makes
   * groups take turns; a handler's first `ctx.enqueue` of the process also takes one, to lease a
   * worker id, so keep `poolSize` above this). @defaultValue `2`
   */
  maxGroups?: number;
  /**
   * Run each message in a savepoint: a failing message leaves its group alone, at one round trip
   * more per message. Without, a failing message rolls its group back and the others run again.
   * @defaultValue `false`
   */
  savepoints?: boolean;
  /**
   * Longest lock wait of a group's statement before the group gives up and its messages run one
   * by one (two groups over the same hot rows would otherwise wait on each other, or deadlock);
   * at most 60,000. @defaultValue `100` (100 ms)
   */
  lockTimeoutMs?: number;
}

/** Options of `createWorker`. */
export interface WorkerOptions extends ConnectionOptions {
  /** Exactly the jobs this worker runs: nothing else is registered. */
  jobs: readonly JobDefinition[];
  /** Queues to consume. @defaultValue every queue one of `jobs` may run on */
  queues?: readonly string[];
  /** Jobs in flight per queue. @defaultValue `10` */
  concurrency?: number;
  /** Deliveries before a job fails for good (of the jobs the worker adds). @defaultValue `10` */
  maxAttempts?: number;
  /** BullMQ's job lock, and the shortest claim lease; at least 1 s. @defaultValue `30_000` (30 s) */
  lockDurationMs?: number;
  /** Lifetime of `done` markers in Redis; at most `dedupeWindowMs`. @defaultValue `86_400_000` (24 h) */
  tokenTtlMs?: number;
  /**
   * How long a message is remembered: older messages are dead-lettered as `expired`, older inbox
   * rows pruned; at least 1 min. @defaultValue `604_800_000` (7 d)
   */
  dedupeWindowMs?: number;
  /**
   * `statement_timeout` of the worker's PostgreSQL sessions (URL pools only); `0` turns it off,
   * otherwise at least `lockDurationMs`. A hung statement then fails, and its delivery is retried
   * instead of renewing its claim forever. @defaultValue `60_000` (60 s)
   */
  statementTimeoutMs?: number;
  /**
   * How long `close()` waits for the jobs in flight before it releases their claims so another
   * worker takes them at once. @defaultValue `10_000` (10 s)
   */
  shutdownTimeoutMs?: number;
  /** The reconciler, or `false` when another process runs it. @defaultValue on */
  reconciler?: ReconcilerOptions | false;
  /** The outbox relay, or `false` when another process runs it. @defaultValue on */
  outbox?: OutboxOptions | false;
  /** The dedupe-window pruner, or `false` when another process runs it. @defaultValue on */
  pruner?: PrunerOptions | false;
  /** Group commit, or `false` for one transaction per message. @defaultValue on */
  groupCommit?: GroupCommitOptions | false;
  /**
   * Completed jobs are removed from Redis this long after they finished, on a timer, even when
   * the queue is idle; their status is then answered from the inbox. At least 1 s.
   * @defaultValue `86_400_000` (24 h)
   */
  completedJobRetentionMs?: number;
}

/**
 * Options of `createProducer`. `Jobs` is inferred from `jobs`, so the producer's `enqueue` knows
 * each job's name and data type.
 */
export interface ProducerOptions<
  Jobs extends readonly JobDefinition[] = readonly JobDefinition[],
> extends ConnectionOptions {
  /** Exactly the jobs this producer may enqueue (their schemas validate the data). */
  jobs: Jobs;
  /** Deliveries before a job fails for good. @defaultValue `10` */
  maxAttempts?: number;
  /** Lifetime of the tokens the producer issues; at most `dedupeWindowMs`. @defaultValue `86_400_000` (24 h) */
  tokenTtlMs?: number;
  /** The workers' dedupe window: a longer `delay` is refused. @defaultValue `604_800_000` (7 d) */
  dedupeWindowMs?: number;
  /**
   * Most tokens a principal may hold issued and neither used nor expired; `0` turns the bound
   * off, otherwise at least 100. @defaultValue `10_000`
   */
  maxUnusedTokens?: number;
  /** Principal of the tokens and messages of this producer. @defaultValue `'local'` */
  principal?: string;
}

/** Options of `migrateToLatest`. */
export interface MigrateOptions {
  /** A `postgres://` URL (the database must exist) or a `pg.Pool`, never ended by onceq. */
  database: string | pg.Pool;
  /** Schema of onceq's tables, created when missing. @defaultValue `'public'` */
  schema?: string;
}

/** Connection options with their defaults. */
export interface ResolvedConnectionOptions {
  /** A URL, a cluster's nodes, or a given instance; `undefined`: PostgreSQL-only mode. */
  readonly redis: string | Redis | Cluster | readonly ClusterNode[] | undefined;
  readonly database: string | pg.Pool;
  readonly prefix: string;
  readonly schema: string;
  readonly poolSize: number;
  readonly logger: Logger | undefined;
}

/** Worker options with their defaults. */
export interface ResolvedWorkerOptions extends ResolvedConnectionOptions {
  readonly jobs: readonly JobDefinition[];
  readonly queues: readonly string[] | undefined;
  readonly concurrency: number;
  readonly maxAttempts: number;
  readonly lockDurationMs: number;
  readonly tokenTtlMs: number;
  readonly dedupeWindowMs: number;
  readonly statementTimeoutMs: number;
  readonly shutdownTimeoutMs: number;
  readonly reconciler: Required<ReconcilerOptions> | false;
  readonly outbox: Required<OutboxOptions> | false;
  readonly pruner: Required<PrunerOptions> | false;
  readonly groupCommit: Required<GroupCommitOptions> | false;
  readonly completedJobRetentionMs: number;
}

/** Producer options with their defaults. */
export interface ResolvedProducerOptions extends ResolvedConnectionOptions {
  readonly jobs: readonly JobDefinition[];
  readonly maxAttempts: number;
  readonly tokenTtlMs: number;
  readonly dedupeWindowMs: number;
  readonly maxUnusedTokens: number;
  readonly principal: string | undefined;
}

const CONNECTION_KEYS = ['redis', 'database', 'prefix', 'schema', 'poolSize', 'logger'] as const;
const WORKER_KEYS = [
  ...CONNECTION_KEYS,
  'jobs',
  'queues',
  'concurrency',
  'maxAttempts',
  'lockDurationMs',
  'tokenTtlMs',
  'dedupeWindowMs',
  'statementTimeoutMs',
  'shutdownTimeoutMs',
  'reconciler',
  'outbox',
  'pruner',
  'groupCommit',
  'completedJobRetentionMs',
] as const satisfies readonly (keyof WorkerOptions)[];
const PRODUCER_KEYS = [
  ...CONNECTION_KEYS,
  'jobs',
  'maxAttempts',
  'tokenTtlMs',
  'dedupeWindowMs',
  'maxUnusedTokens',
  'principal',
] as const satisfies readonly (keyof ProducerOptions)[];

/** Collects one line per bad value; `done()` throws them all at once. */
class Checker {
  readonly problems: string[] = [];
  /** Options already reported as bad: combinations with them are not checked. */
  readonly bad = new Set<string>();

  constructor(
    private readonly options: Record<string, unknown>,
    private readonly what: string,
  ) {}

  fail(name: string, line: string): void {
    this.bad.add(name);
    this.problems.push(`${name}${line}`);
  }

  known(keys: readonly string[], path = '', value: Record<string, unknown> = this.options): void {
    for (const key of Object.keys(value)) {
      if (!keys.includes(key) && value[key] !== undefined) {
        this.fail(`${path}${key}`, `: not an option of ${this.what}`);
      }
    }
  }

  int(name: string, value: unknown, fallback: number, min: number, max: number): number {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      this.fail(name, `=${show(value)}: expected an integer from ${min} to ${max}`);
      return fallback;
    }
    return value;
  }

  duration(name: string, value: unknown, fallback: number, minMs: number): number {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < minMs) {
      this.fail(
        name,
        `=${show(value)}: expected a whole number of milliseconds, at least ${minMs} (${formatDuration(minMs)})`,
      );
      return fallback;
    }
    return value;
  }

  bool(name: string, value: unknown, fallback: boolean): boolean {
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') {
      this.fail(name, `=${show(value)}: expected true or false`);
      return fallback;
    }
    return value;
  }

  text(name: string, value: unknown, fallback: string, pattern: RegExp, rule: string): string {
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || !pattern.test(value)) {
      this.fail(name, `=${show(value)}: expected ${rule}`);
      return fallback;
    }
    return value;
  }

  url(name: string, value: string, protocols: string[]): void {
    try {
      if (!protocols.includes(new URL(value).protocol)) {
        this.fail(name, `=${redactUrl(value)}: expected a ${protocols.join(' or ')} URL`);
      }
    } catch {
      this.fail(name, ': not a URL');
    }
  }

  /** `false`, `undefined` (the defaults) or an object of the given keys. */
  component(
    name: string,
    value: unknown,
    keys: readonly string[],
  ): Record<string, unknown> | false {
    if (value === false) return false;
    if (value === undefined) return {};
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      this.fail(name, `=${show(value)}: expected an options object, or false to turn it off`);
      return {};
    }
    this.known(keys, `${name}.`, value as Record<string, unknown>);
    return value as Record<string, unknown>;
  }

  done(): void {
    if (this.problems.length > 0)
      throw new ConfigError(this.problems, { subject: `${this.what} options` });
  }
}

/** A value as a message shows it: strings quoted, URLs without passwords never reach here. */
function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'object' && value !== null)
    return Array.isArray(value) ? 'an array' : 'an object';
  return String(value);
}

function checkOptionsObject(options: unknown, what: string): Record<string, unknown> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError([`${what} needs an options object`], { subject: `${what} options` });
  }
  return options as Record<string, unknown>;
}

function connection(check: Checker, options: Record<string, unknown>): ResolvedConnectionOptions {
  const { database } = options;
  let redis = options.redis;
  if (typeof redis === 'string') check.url('redis', redis, ['redis:', 'rediss:']);
  else if (Array.isArray(redis)) redis = clusterNodes(check, redis as unknown[]);
  else if (redis !== undefined && !isRedis(redis)) {
    check.fail(
      'redis',
      ': expected a redis:// URL, a Redis Cluster node list or an ioredis instance, or none ' +
        'for PostgreSQL alone',
    );
  }
  if (typeof database === 'string') check.url('database', database, ['postgres:', 'postgresql:']);
  else if (!isPool(database)) {
    check.fail('database', ': expected a postgres:// URL or a pg.Pool');
  }
  const logger = options.logger;
  if (logger !== undefined && typeof (logger as Logger)?.info !== 'function') {
    check.fail('logger', ': expected a pino logger');
  }
  return {
    redis: redis as ResolvedConnectionOptions['redis'],
    database: database as string | pg.Pool,
    prefix: check.text(
      'prefix',
      options.prefix,
      DEFAULT_PREFIX,
      /^[A-Za-z0-9_.-]{1,64}$/,
      'letters, digits, _ . - (no ":" or braces)',
    ),
    schema: check.text(
      'schema',
      options.schema,
      DEFAULT_SCHEMA,
      /^[a-z_][a-z0-9_]{0,62}$/,
      'a lower-case SQL identifier',
    ),
    poolSize: check.int('poolSize', options.poolSize, DEFAULT_POOL_SIZE, 1, 1_000),
    logger: logger as Logger | undefined,
  };
}

/** The settings a worker and a producer share and check alike: attempts, token ttl, window. */
function messageSettings(
  check: Checker,
  options: Record<string, unknown>,
): { maxAttempts: number; tokenTtlMs: number; dedupeWindowMs: number } {
  const min = MIN_DURATION_MS;
  return {
    maxAttempts: check.int('maxAttempts', options.maxAttempts, DEFAULT_MAX_ATTEMPTS, 1, 1_000),
    tokenTtlMs: check.duration(
      'tokenTtlMs',
      options.tokenTtlMs,
      DEFAULT_TOKEN_TTL_MS,
      min.tokenTtlMs,
    ),
    dedupeWindowMs: check.duration(
      'dedupeWindowMs',
      options.dedupeWindowMs,
      DEFAULT_DEDUPE_WINDOW_MS,
      min.dedupeWindowMs,
    ),
  };
}

function jobs(check: Checker, value: unknown): readonly JobDefinition[] {
  if (!Array.isArray(value) || value.length === 0) {
    check.fail('jobs', ': expected a non-empty array of job definitions (defineJob)');
    return [];
  }
  const seen = new Set<string>();
  value.forEach((job: unknown, i) => {
    if (!isJobDefinition(job)) {
      check.fail(`jobs[${i}]`, ': not a job definition (use defineJob)');
    } else if (seen.has(job.name)) {
      check.fail(`jobs[${i}]`, `: job ${job.name} is given twice (job names are unique)`);
    } else {
      seen.add(job.name);
    }
  });
  return Object.freeze([...(value as JobDefinition[])]);
}

/** The option name of each timing setting, for the combination messages. */
const TIMING_OPTIONS: Record<keyof TimingSettings, string> = {
  lockDurationMs: 'lockDurationMs',
  tokenTtlMs: 'tokenTtlMs',
  dedupeWindowMs: 'dedupeWindowMs',
  reconcileGraceMs: 'reconciler.graceMs',
  statementTimeoutMs: 'statementTimeoutMs',
};

function combinations(
  check: Checker,
  settings: TimingSettings,
  given: (setting: keyof TimingSettings) => unknown,
  only: readonly (keyof TimingSettings)[],
): void {
  const problems = combinationProblems(settings, {
    name: (setting) => TIMING_OPTIONS[setting],
    isSet: (setting) => given(setting) !== undefined,
    // A pair is checked only when both settings apply to this component and are good.
    isBad: (setting) => !only.includes(setting) || check.bad.has(TIMING_OPTIONS[setting]),
  });
  check.problems.push(...problems);
}

/** Merges the defaults into worker options and checks every value; throws a `ConfigError`. */
export function resolveWorkerOptions(input: WorkerOptions): ResolvedWorkerOptions {
  const options = checkOptionsObject(input, 'createWorker');
  const check = new Checker(options, 'createWorker');
  check.known(WORKER_KEYS);
  const base = connection(check, options);
  // A worker's BullMQ blocking connection is a duplicate of the caller's Cluster, options and all.
  const clusterProblem = isRedis(base.redis) ? clusterOptionsProblem(base.redis) : undefined;
  if (clusterProblem) check.fail('redis', `: ${clusterProblem}`);
  const jobList = jobs(check, options.jobs);
  let queues: readonly string[] | undefined;
  if (options.queues !== undefined) {
    if (!Array.isArray(options.queues)) {
      check.fail('queues', ': expected an array of queue names');
    } else {
      for (const q of options.queues as unknown[]) {
        if (typeof q !== 'string' || !QUEUE_NAME.test(q)) {
          check.fail('queues', `: ${show(q)} is not a valid queue name (${QUEUE_NAME_RULE})`);
        }
      }
      queues = options.queues.length ? Object.freeze([...(options.queues as string[])]) : undefined;
    }
  }
  const reconcilerIn = check.component('reconciler', options.reconciler, ['intervalMs', 'graceMs']);
  const outboxIn = check.component('outbox', options.outbox, ['intervalMs']);
  const prunerIn = check.component('pruner', options.pruner, ['intervalMs']);
  const groupIn = check.component('groupCommit', options.groupCommit, [
    'maxSize',
    'maxGroups',
    'savepoints',
    'lockTimeoutMs',
  ]);
  const min = MIN_DURATION_MS;
  const resolved: ResolvedWorkerOptions = {
    ...base,
    jobs: jobList,
    queues,
    concurrency: check.int('concurrency', options.concurrency, DEFAULT_CONCURRENCY, 1, 10_000),
    ...messageSettings(check, options),
    lockDurationMs: check.duration(
      'lockDurationMs',
      options.lockDurationMs,
      DEFAULT_LOCK_DURATION_MS,
      min.lockDurationMs,
    ),
    statementTimeoutMs: check.duration(
      'statementTimeoutMs',
      options.statementTimeoutMs,
      DEFAULT_STATEMENT_TIMEOUT_MS,
      min.statementTimeoutMs,
    ),
    shutdownTimeoutMs: check.duration(
      'shutdownTimeoutMs',
      options.shutdownTimeoutMs,
      DEFAULT_SHUTDOWN_TIMEOUT_MS,
      min.shutdownTimeoutMs,
    ),
    reconciler: reconcilerIn && {
      intervalMs: check.duration(
        'reconciler.intervalMs',
        reconcilerIn.intervalMs,
        DEFAULT_RECONCILE_INTERVAL_MS,
        min.reconcileIntervalMs,
      ),
      graceMs: check.duration(
        'reconciler.graceMs',
        reconcilerIn.graceMs,
        DEFAULT_RECONCILE_GRACE_MS,
        min.reconcileGraceMs,
      ),
    },
    outbox: outboxIn && {
      intervalMs: check.duration(
        'outbox.intervalMs',
        outboxIn.intervalMs,
        DEFAULT_OUTBOX_INTERVAL_MS,
        min.outboxIntervalMs,
      ),
    },
    pruner: prunerIn && {
      intervalMs: check.duration(
        'pruner.intervalMs',
        prunerIn.intervalMs,
        DEFAULT_PRUNE_INTERVAL_MS,
        min.pruneIntervalMs,
      ),
    },
    completedJobRetentionMs: check.duration(
      'completedJobRetentionMs',
      options.completedJobRetentionMs,
      DEFAULT_COMPLETED_JOB_RETENTION_MS,
      1_000,
    ),
    groupCommit: groupIn && {
      maxSize: check.int(
        'groupCommit.maxSize',
        groupIn.maxSize,
        DEFAULT_GROUP_COMMIT_MAX_SIZE,
        1,
        MAX_GROUP_COMMIT_SIZE,
      ),
      maxGroups: check.int(
        'groupCommit.maxGroups',
        groupIn.maxGroups,
        DEFAULT_GROUP_COMMIT_MAX_GROUPS,
        1,
        MAX_GROUP_COMMIT_GROUPS,
      ),
      savepoints: check.bool('groupCommit.savepoints', groupIn.savepoints, false),
      lockTimeoutMs: check.int(
        'groupCommit.lockTimeoutMs',
        groupIn.lockTimeoutMs,
        DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS,
        1,
        MAX_GROUP_COMMIT_LOCK_TIMEOUT_MS,
      ),
    },
  };
  combinations(
    check,
    {
      ...resolved,
      reconcileGraceMs: resolved.reconciler ? resolved.reconciler.graceMs : 0,
    },
    (setting) =>
      setting === 'reconcileGraceMs'
        ? (reconcilerIn || undefined)?.graceMs
        : options[TIMING_OPTIONS[setting]],
    resolved.reconciler
      ? ['lockDurationMs', 'tokenTtlMs', 'dedupeWindowMs', 'reconcileGraceMs', 'statementTimeoutMs']
      : ['lockDurationMs', 'tokenTtlMs', 'dedupeWindowMs', 'statementTimeoutMs'],
  );
  check.done();
  return Object.freeze(resolved);
}

/** Merges the defaults into producer options and checks every value; throws a `ConfigError`. */
export function resolveProducerOptions(input: ProducerOptions): ResolvedProducerOptions {
  const options = checkOptionsObject(input, 'createProducer');
  const check = new Checker(options, 'createProducer');
  check.known(PRODUCER_KEYS);
  const base = connection(check, options);
  let maxUnusedTokens = DEFAULT_MAX_OUTSTANDING_TOKENS;
  const unused = options.maxUnusedTokens;
  if (unused !== undefined) {
    if (
      typeof unused !== 'number' ||
      !Number.isInteger(unused) ||
      (unused !== 0 && (unused < MAX_ISSUE_COUNT || unused > 100_000_000))
    ) {
      check.fail(
        'maxUnusedTokens',
        `=${show(unused)}: expected an integer from ${MAX_ISSUE_COUNT} (one request may ask for ` +
          'that many) to 100000000, or 0 for no bound',
      );
    } else {
      maxUnusedTokens = unused;
    }
  }
  const principal = options.principal;
  if (principal !== undefined && (typeof principal !== 'string' || principal === '')) {
    check.fail('principal', `=${show(principal)}: expected a non-empty string`);
  }
  const resolved: ResolvedProducerOptions = {
    ...base,
    jobs: jobs(check, options.jobs),
    ...messageSettings(check, options),
    maxUnusedTokens,
    principal: principal as string | undefined,
  };
  combinations(
    check,
    {
      tokenTtlMs: resolved.tokenTtlMs,
      dedupeWindowMs: resolved.dedupeWindowMs,
      lockDurationMs: 0,
      reconcileGraceMs: 0,
      statementTimeoutMs: 0,
    },
    (setting) => options[TIMING_OPTIONS[setting]],
    ['tokenTtlMs', 'dedupeWindowMs'],
  );
  check.done();
  return Object.freeze(resolved);
}

/** Checks the options of `migrateToLatest`. */
export function resolveMigrateOptions(input: MigrateOptions): Required<MigrateOptions> {
  const options = checkOptionsObject(input, 'migrateToLatest');
  const check = new Checker(options, 'migrateToLatest');
  check.known(['database', 'schema']);
  const { database } = options;
  if (typeof database === 'string') check.url('database', database, ['postgres:', 'postgresql:']);
  else if (!isPool(database)) check.fail('database', ': expected a postgres:// URL or a pg.Pool');
  const schema = check.text(
    'schema',
    options.schema,
    DEFAULT_SCHEMA,
    /^[a-z_][a-z0-9_]{0,62}$/,
    'a lower-case SQL identifier',
  );
  check.done();
  return { database: database as string | pg.Pool, schema };
}

/** A cluster node list: `'host:port'` strings or `{ host, port }` objects, at least one. */
function clusterNodes(check: Checker, entries: unknown[]): ClusterNode[] {
  const { nodes, problems } = parseClusterNodes(entries.map(nodeText));
  for (const problem of problems) check.fail('redis', `: ${problem}`);
  return nodes;
}

/** A node list entry as `host:port` text, for the one rule of core/cluster-nodes.ts. */
function nodeText(entry: unknown): string {
  if (typeof entry === 'string') return entry;
  if (typeof entry === 'object' && entry !== null && 'host' in entry && 'port' in entry) {
    const host = String(entry.host);
    return `${host.includes(':') ? `[${host}]` : host}:${String(entry.port)}`;
  }
  return JSON.stringify(entry) ?? String(entry);
}

/** Duck-typed, so an ioredis from another copy of the package is accepted too. */
function isRedis(value: unknown): value is Redis | Cluster {
  const v = value as Partial<Redis> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.duplicate === 'function' &&
    typeof v.ping === 'function'
  );
}

/** Duck-typed, so a pg from another copy of the package is accepted too. */
function isPool(value: unknown): value is pg.Pool {
  const v = value as Partial<pg.Pool> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.connect === 'function' &&
    typeof v.end === 'function'
  );
}
