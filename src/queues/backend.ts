/**
 * Where the queues and the tokens live. onceq runs in one of two modes, and every component that
 * touches a queue or a token goes through this interface, never through Redis or a BullMQ
 * backend directly:
 *
 * - `redis`: BullMQ on Redis (its proven path) and the token store as Lua scripts
 *   (redis/token-store.ts). The default when a Redis is configured.
 * - `postgres`: BullMQ on its PostgreSQL backend (jobs in a table of their own schema,
 *   `FOR UPDATE SKIP LOCKED`, `LISTEN/NOTIFY`) and the token store as a table with the same
 *   transitions and answers (db/token-store.ts). One service to run, nothing to lose between
 *   two stores.
 *
 * The message transaction, the inbox and the version checks are the same in both: they never
 * depended on where the queue lives.
 */
import type { Job, Queue, Worker } from 'bullmq';
import type { Db } from '../db/create-db.js';
import type { TokenStore } from '../redis/token-store.js';
import type { RemovedJobs } from './remove-jobs.js';

export type { RemovedJobs };

/** The two modes. */
export type BackendKind = 'redis' | 'postgres';

/** Options of a BullMQ worker that the backend creates (both backends honour all of them). */
export interface BackendWorkerOptions {
  concurrency: number;
  lockDuration: number;
  stalledInterval: number;
  maxStalledCount: number;
}

/** A token store and the connection it took. */
export interface OpenTokenStore {
  readonly tokens: TokenStore;
  /** Releases what the store took (a Redis connection of its own; nothing for PostgreSQL). */
  close(): Promise<void>;
  /**
   * Deletes expired token state, a batch at a time, and resolves to how much it deleted:
   * PostgreSQL keeps expired rows (they read as missing) until this runs; Redis expires its keys
   * itself and has none.
   */
  readonly deleteExpired?: () => Promise<number>;
}

/** Options of {@link Backend.openTokenStore}. */
export interface OpenTokenStoreOptions {
  /** onceq's database (the PostgreSQL token store's table lives there). */
  db: Db;
  /** Most outstanding tokens per principal (see `TokenStoreOptions.maxOutstanding`). */
  maxOutstanding?: number;
}

/** Queues and tokens, in Redis or in PostgreSQL. */
export interface Backend {
  readonly kind: BackendKind;
  /**
   * Namespaces the queues: the Redis key prefix, or in PostgreSQL-only mode the schema of
   * BullMQ's tables.
   */
  readonly prefix: string;
  /** Where the queues live, for messages (never with a password). */
  readonly where: string;
  /** A new BullMQ queue object for `name`; the caller closes it (see queues/queue-cache.ts). */
  newQueue(name: string): Queue;
  /** A new BullMQ worker for `name`, not yet running (`autorun: false`). */
  newWorker(
    name: string,
    processor: (job: Job, token?: string) => Promise<unknown>,
    options: BackendWorkerOptions,
  ): Worker;
  /** A token store over this backend. */
  openTokenStore(options: OpenTokenStoreOptions): OpenTokenStore;
  /**
   * Removes jobs of one queue, as `queue.remove(id)` would, in bulk where the backend can; a
   * removal refused because the job is locked is reported, not thrown.
   */
  removeJobs(queue: Queue, jobIds: readonly string[]): Promise<RemovedJobs>;
  /** Resolves when the backend answers (readiness). */
  ping(): Promise<void>;
  /** Closes what the backend opened itself (never a connection it was given). */
  close(): Promise<void>;
}
