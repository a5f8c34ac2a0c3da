/**
 * `createWorker`: a worker as `onceq worker` runs one, from one options object. It consumes the
 * queues of exactly the jobs it is given and runs everything that keeps the guarantees beside
 * them (the reconciler, the outbox relay, the pruner, and the worker-id lease its follow-ups
 * need), each of which can be turned off for a team that runs it elsewhere.
 */
import type { Job } from 'bullmq';
import type { RedisClient } from '../redis/connection.js';
import type { Backend } from '../queues/backend.js';
import type { Db } from '../db/create-db.js';
import { ConfigError } from '../core/errors.js';
import type { DeliveryOutcome } from '../core/outcome.js';
import { JobRegistry } from '../jobs/registry.js';
import type { JobDefinition } from '../jobs/define-job.js';
import type { FaultHook } from '../worker/fault-hook.js';
import type { ReconcileReport } from '../worker/reconciler.js';
import { startWorker, type OnceqWorker } from '../worker/worker.js';
import { openConnections } from './connections.js';
import { assertNoLegacyWorkerIdLeases } from '../ids/legacy-lease-check.js';
import { resolveWorkerOptions, type ResolvedWorkerOptions, type WorkerOptions } from './options.js';

/** A running worker. */
export interface Worker {
  /** This worker's process id in claims and logs (`host:pid:random`). */
  readonly id: string;
  /** The queues it consumes, by their own names (a partitioned queue once, for all its partitions). */
  readonly queues: readonly string[];
  /**
   * Stops taking jobs, waits up to `shutdownTimeoutMs` for the ones in flight (past that,
   * releases their claims so another worker takes them at once), stops the background tasks and
   * closes the connections onceq opened. Idempotent.
   */
  close(): Promise<void>;
}

/** What the CLI adds to a worker: hooks that are not part of the library's options. */
export interface WorkerHooks {
  /** Replaces the registry built from `jobs` (the CLI's is instrumented for metrics). */
  registry?: (registry: JobRegistry) => JobRegistry;
  fault?: FaultHook;
  onOutcome?: (outcome: DeliveryOutcome, job: Job) => void;
  onReconcilerPass?: (report: ReconcileReport) => void;
  /** `application_name` of the sessions. @defaultValue `onceq-worker` */
  name?: string;
}

/** A worker with what the CLI needs of it. */
export interface OpenWorker {
  readonly worker: Worker;
  readonly running: OnceqWorker;
  readonly options: ResolvedWorkerOptions;
  readonly db: Db;
  /** `undefined` in PostgreSQL-only mode. */
  readonly redis: RedisClient | undefined;
  readonly backend: Backend;
  /** Closes the connections onceq opened (after `running.close()`). */
  closeConnections(): Promise<void>;
}

/**
 * Starts a worker. Resolves once Redis and PostgreSQL answered and every queue's BullMQ worker
 * is running; rejects with a `ConfigError` listing every bad option, or with a
 * `ServiceUnreachableError` naming the service that did not answer.
 *
 * ```ts
 * const worker = await createWorker({ redis: 'redis://127.0.0.1:6379', database: url, jobs: [addNote] });
 * process.on('SIGTERM', () => void worker.close());
 * ```
 */
export async function createWorker(options: WorkerOptions): Promise<Worker> {
  return (await openWorker(options)).worker;
}

/** `createWorker` with the CLI's hooks; the one path both take. */
export async function openWorker(
  input: WorkerOptions,
  hooks: WorkerHooks = {},
): Promise<OpenWorker> {
  const options = resolveWorkerOptions(input);
  const registry = buildRegistry(options.jobs, 'createWorker');
  const connections = await openConnections(options, {
    name: hooks.name ?? 'onceq-worker',
    // A paused worker's transaction must not block the message's next owner for long.
    idleInTransactionTimeoutMs: options.lockDurationMs,
    // A hung statement must end, or its delivery would keep renewing the message's claim.
    statementTimeoutMs: options.statementTimeoutMs,
  });
  let running: OnceqWorker;
  try {
    if (connections.redis) await assertNoLegacyWorkerIdLeases(connections.redis, options.prefix);
    running = await startWorker({
      db: connections.db,
      backend: connections.backend,
      registry: hooks.registry ? hooks.registry(registry) : registry,
      queues: options.queues,
      concurrency: options.concurrency,
      lockDurationMs: options.lockDurationMs,
      tokenTtlMs: options.tokenTtlMs,
      dedupeWindowMs: options.dedupeWindowMs,
      maxAttempts: options.maxAttempts,
      fault: hooks.fault,
      logger: options.logger,
      onOutcome: hooks.onOutcome,
      outbox: options.outbox && { intervalMs: options.outbox.intervalMs },
      reconciler: options.reconciler && {
        intervalMs: options.reconciler.intervalMs,
        graceMs: options.reconciler.graceMs,
        onPass: hooks.onReconcilerPass,
      },
      pruner: options.pruner && { intervalMs: options.pruner.intervalMs },
      groupCommit: options.groupCommit && { ...options.groupCommit },
      completedJobRetentionMs: options.completedJobRetentionMs,
    });
  } catch (err) {
    await connections.close().catch(() => undefined);
    throw err;
  }
  let closing: Promise<void> | undefined;
  const worker: Worker = {
    id: running.processId,
    queues: running.queues,
    close() {
      closing ??= (async () => {
        const { forced } = await running.close(options.shutdownTimeoutMs);
        if (forced) {
          // The worker released the claims when the bound passed; this catches any it missed.
          await running.pipeline.releaseAll().catch(() => []);
        }
        await connections.close();
      })();
      return closing;
    },
  };
  return {
    worker,
    running,
    options,
    db: connections.db,
    redis: connections.redis,
    backend: connections.backend,
    closeConnections: connections.close,
  };
}

/** The registry of exactly the given jobs; a schema Ajv refuses is a bad `jobs` option. */
export function buildRegistry(jobs: readonly JobDefinition[], what: string): JobRegistry {
  const registry = new JobRegistry();
  const problems: string[] = [];
  jobs.forEach((job, i) => {
    try {
      registry.register(job);
    } catch (err) {
      problems.push(`jobs[${i}]: job ${job.name}: ${(err as Error).message}`);
    }
  });
  if (problems.length > 0) throw new ConfigError(problems, { subject: `${what} options` });
  return registry;
}
