/**
 * Every default of onceq, defined once. The CLI's environment (config.ts), the library's options
 * (lib/options.ts) and the components below them all fall back to these, so a default documented
 * in one place is the default everywhere.
 */

/** Where the CLI looks for Redis when `REDIS_URL` is unset. */
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';
/** Where the CLI looks for PostgreSQL when `DATABASE_URL` is unset. */
export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/onceq';
/** Data of the embedded PostgreSQL that `onceq start` runs when no server answers. */
export const DEFAULT_DATA_DIR = './.onceq/pg';
/** The PostgreSQL schema of onceq's tables. */
export const DEFAULT_SCHEMA = 'public';
export const DEFAULT_PORT = 3000;
/** Prefix of every Redis key, BullMQ's and onceq's. */
export const DEFAULT_PREFIX = 'onceq';
export const DEFAULT_CONCURRENCY = 10;
/** BullMQ queues of one logical queue (core/queue-partitions.ts): one, the queue itself. */
export const DEFAULT_PARTITIONS = 1;
export const DEFAULT_MAX_ATTEMPTS = 10;
export const DEFAULT_POOL_SIZE = 10;
export const DEFAULT_LOCK_DURATION_MS = 30_000;
export const DEFAULT_TOKEN_TTL_MS = 24 * 3_600_000;
/**
 * Longest result JSON (bytes) a done token keeps in Redis, for a token ttl per message; a longer
 * one is left to PostgreSQL's inbox row. The ledger's results are under 64 bytes.
 */
export const DEFAULT_TOKEN_RESULT_MAX_BYTES = 1_024;
/**
 * Completed BullMQ jobs are kept this long for status look-ups (the inbox keeps the truth longer):
 * the jobs' `removeOnComplete` age, and the default retention of the completed-job trimmer.
 */
export const DEFAULT_COMPLETED_JOB_RETENTION_MS = 86_400_000;
/** Most completed jobs a queue keeps (the jobs' `removeOnComplete` count). */
export const DEFAULT_COMPLETED_JOB_RETENTION_COUNT = 100_000;
/** Time between two runs of the completed-job trimmer (queues/completed-job-trimmer.ts). */
export const DEFAULT_COMPLETED_JOB_TRIM_INTERVAL_MS = 60_000;
/** Completed jobs the trimmer removes per script call. */
export const DEFAULT_COMPLETED_JOB_TRIM_BATCH = 1_000;
export const DEFAULT_DEDUPE_WINDOW_MS = 7 * 86_400_000;
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;
export const DEFAULT_STATEMENT_TIMEOUT_MS = 60_000;
export const DEFAULT_RECONCILE_INTERVAL_MS = 60_000;
export const DEFAULT_RECONCILE_GRACE_MS = 120_000;
export const DEFAULT_PRUNE_INTERVAL_MS = 600_000;
/**
 * Days of inbox and accepted_messages partitions the workers keep created past today (UTC). A
 * fleet down longer than this still loses nothing: later ids go to the default partition.
 */
export const DEFAULT_PARTITION_DAYS_AHEAD = 3;
/** How often each worker checks that the partitions ahead exist (and on start). */
export const DEFAULT_PARTITION_INTERVAL_MS = 3_600_000;
export const DEFAULT_OUTBOX_INTERVAL_MS = 1_000;
/** Most messages one group commit holds (worker/commit-groups.ts). */
export const DEFAULT_GROUP_COMMIT_MAX_SIZE = 50;
/** Group commits in flight at once per worker process. */
export const DEFAULT_GROUP_COMMIT_MAX_GROUPS = 2;
/** Longest lock wait of a group commit's statement before its members run alone. */
export const DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS = 100;
export const DEFAULT_HOST = '0.0.0.0';
export const DEFAULT_BODY_LIMIT = 1_048_576;
/** High on purpose: it stops a runaway client, not normal traffic (1,000 requests/s). */
export const DEFAULT_RATE_LIMIT = Object.freeze({ max: 60_000, windowMs: 60_000 });
/**
 * Failed authentications per client address per minute: far above a client with a stale key
 * retrying with backoff, and it bounds what a key spray from one address costs PostgreSQL (each
 * failure is at most one key lookup) to about 2 lookups a second.
 */
export const DEFAULT_AUTH_FAILURE_LIMIT = Object.freeze({ max: 100, windowMs: 60_000 });
