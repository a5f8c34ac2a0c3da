/**
 * The onceq worker: one BullMQ `Worker` per queue (per partition of a partitioned queue: see
 * core/queue-partitions.ts), all running the same pipeline. Owns nothing it did not create: the
 * backend and the database are passed in and closed by the caller.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { Job, type Worker } from 'bullmq';
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import type { JobRegistry } from '../jobs/registry.js';
import type { DeliveryOutcome } from '../core/outcome.js';
import type { ConflictRetryOptions } from '../core/retry.js';
import { createIdService, type IdService } from '../ids/id-service.js';
import { createPipeline, type Pipeline } from './pipeline.js';
import {
  createCommitGroups,
  type GroupCommitOptions,
  type GroupCommitStats,
} from './commit-groups.js';
import type { FaultHook } from './fault-hook.js';
import { createDeadLetterWriter, DeadLetteredError } from './dead-letters.js';
import { createOutboxRelay, type OutboxRelay } from './outbox-relay.js';
import { createReconciler, type ReconcileReport, type Reconciler } from './reconciler.js';
import { createPruner, type Pruner } from './pruner.js';
import {
  startPartitionMaintainer,
  type PartitionMaintainerOptions,
} from './partition-maintainer.js';
import { startPeriodic } from './periodic.js';
import { createQueueCache } from '../queues/queue-cache.js';
import type { Backend } from '../queues/backend.js';
import { startCompletedJobTrimmer } from '../queues/completed-job-trimmer.js';
import { partitionCount, partitionQueueNames } from '../core/queue-partitions.js';
import {
  DEFAULT_COMPLETED_JOB_RETENTION_MS,
  DEFAULT_CONCURRENCY,
  DEFAULT_DEDUPE_WINDOW_MS,
  DEFAULT_LOCK_DURATION_MS,
  DEFAULT_TOKEN_TTL_MS,
} from '../core/defaults.js';

/** Between two sweeps of expired token rows (PostgreSQL-only mode). */
export const TOKEN_SWEEP_INTERVAL_MS = 60_000;

/** BullMQ moves a job to failed after this many stalls; onceq's claims make a stall harmless. */
export const DEFAULT_MAX_STALLED_COUNT = 10;

/** Options of {@link startWorker}. */
export interface OnceqWorkerOptions {
  db: Db;
  /** Where the queues and tokens live (Redis or PostgreSQL); not closed by the worker. */
  backend: Backend;
  registry: JobRegistry;
  /**
   * Queues to consume, by their own (logical) names: every partition of a partitioned queue is
   * consumed. @defaultValue every queue of a registered job
   */
  queues?: readonly string[];
  /**
   * Jobs in flight per queue. A partitioned queue shares it among its partitions (10 over 4
   * partitions: 3, 3, 2 and 2), so partitioning a queue does not multiply what one process
   * holds open against PostgreSQL; each partition gets at least one, so a queue with more
   * partitions than this runs one job per partition. @defaultValue 10
   */
  concurrency?: number;
  /** BullMQ lock duration, and the claim lease. @defaultValue 30 s */
  lockDurationMs?: number;
  /** TTL of `done` markers in Redis. @defaultValue 24 h */
  tokenTtlMs?: number;
  /** @defaultValue {@link DEFAULT_MAX_STALLED_COUNT} */
  maxStalledCount?: number;
  conflictRetry?: ConflictRetryOptions;
  fault?: FaultHook;
  logger?: Logger;
  onOutcome?: (outcome: DeliveryOutcome, job: Job) => void;
  /**
   * Messages minted longer ago are dead-lettered as `expired`; inbox rows and accepted messages
   * older are pruned. @defaultValue 7 d
   */
  dedupeWindowMs?: number;
  /** Attempts of the jobs the worker adds (follow-ups, re-enqueued messages). @defaultValue 10 */
  maxAttempts?: number;
  /** Backoff base of those jobs. @defaultValue 1000 ms */
  backoffMs?: number;
  /**
   * Mints the messageIds of follow-ups (`ctx.enqueue`).
   * @defaultValue an id service leasing a worker id from Redis on first use
   */
  ids?: { nextId(): string };
  /** The outbox relay, or `false` for none. @defaultValue on, every 1 s and on each commit */
  outbox?: { intervalMs?: number } | false;
  /** The reconciler, or `false` for none. @defaultValue on, every 60 s, grace 120 s */
  reconciler?:
    { intervalMs?: number; graceMs?: number; onPass?: (report: ReconcileReport) => void } | false;
  /** The dedupe-window pruner, or `false` for none. @defaultValue on, every 10 min */
  pruner?: { intervalMs?: number; batchSize?: number } | false;
  /**
   * Creation of the day partitions of inbox and accepted_messages ahead of time, on start and
   * every `intervalMs`, or `false` for none (another process does it; ids past the last
   * partition then land in the default partition, which still loses nothing).
   * @defaultValue on, every hour, 3 days ahead
   */
  partitions?: PartitionMaintainerOptions | false;
  /**
   * Group commit: concurrent deliveries share one transaction and one `COMMIT` (see
   * commit-groups.ts), or `false` for one transaction per message.
   * @defaultValue on, at most 50 messages a group, 2 groups in flight, no savepoints
   */
  groupCommit?: GroupCommitOptions | false;
  /**
   * Completed jobs are removed this long after they finished, on a timer even when the queue
   * is idle (queues/completed-job-trimmer.ts), or `false` to leave them to BullMQ's own
   * `removeOnComplete` (a day, 100,000 jobs, applied only when another job completes).
   * @defaultValue 24 h
   */
  completedJobRetentionMs?: number | false;
}

/** A running worker. */
export interface OnceqWorker {
  readonly processId: string;
  /** The logical queues consumed. */
  readonly queues: readonly string[];
  /** The BullMQ workers: one per queue, or per partition of a partitioned queue. */
  readonly workers: readonly Worker[];
  readonly pipeline: Pipeline;
  /** The background tasks this worker runs (absent when turned off). */
  readonly outbox: OutboxRelay | undefined;
  readonly reconciler: Reconciler | undefined;
  readonly pruner: Pruner | undefined;
  /** Figures of the group commit, or `undefined` when it is off. */
  groupCommitStats(): GroupCommitStats | undefined;
  /**
   * Stops taking jobs and waits up to `timeoutMs` for the ones in flight; past that, closes
   * forcibly and releases their claims so another worker can take them over at once (their
   * transactions roll back when the caller closes the database).
   */
  close(timeoutMs?: number): Promise<{ forced: boolean }>;
}

/** Starts consuming. Resolves once every queue's worker is running. */
export async function startWorker(options: OnceqWorkerOptions): Promise<OnceqWorker> {
  const lockDurationMs = options.lockDurationMs ?? DEFAULT_LOCK_DURATION_MS;
  const log = options.logger;
  const processId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const tokenStore = options.backend.openTokenStore({ db: options.db });
  const { tokens } = tokenStore;
  const dedupeWindowMs = options.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS;
  const partitions = options.registry.partitions();
  const deadLetters = createDeadLetterWriter({
    db: options.db,
    backend: options.backend,
    fault: options.fault,
    logger: log,
  });
  // Follow-ups need ids; a worker whose handlers never enqueue never leases a worker id.
  let idService: Promise<IdService> | undefined;
  const ids = options.ids
    ? () => Promise.resolve(options.ids!)
    : () =>
        (idService ??= createIdService(options.db, {
          onLost: (event) => log?.warn(event, 'worker id lost; leasing another'),
          onReacquired: (event) => log?.info(event, 'worker id leased again'),
        }).catch((err: unknown) => {
          // Not cached: the next follow-up tries again (every id may be free again by then).
          idService = undefined;
          throw err;
        }));
  const jobDefaults = { maxAttempts: options.maxAttempts, backoffMs: options.backoffMs };
  const outbox =
    options.outbox === false
      ? undefined
      : createOutboxRelay({
          db: options.db,
          backend: options.backend,
          partitions,
          deadLetters,
          intervalMs: options.outbox?.intervalMs,
          ...jobDefaults,
          logger: log,
        });
  const reconciler =
    options.reconciler === false
      ? undefined
      : createReconciler({
          db: options.db,
          backend: options.backend,
          partitions,
          deadLetters,
          intervalMs: options.reconciler?.intervalMs,
          graceMs: options.reconciler?.graceMs,
          onPass: options.reconciler?.onPass,
          dedupeWindowMs,
          ...jobDefaults,
          logger: log,
        });
  // PostgreSQL-only mode: expired token rows read as missing, and go in the background.
  const tokenSweep = tokenStore.deleteExpired
    ? startPeriodic({
        name: 'token-sweep',
        intervalMs: TOKEN_SWEEP_INTERVAL_MS,
        run: tokenStore.deleteExpired,
        logger: log,
      })
    : undefined;
  const partitionMaintainer =
    options.partitions === false
      ? undefined
      : startPartitionMaintainer(options.db, { logger: log, ...options.partitions });
  const pruner =
    options.pruner === false
      ? undefined
      : createPruner({
          db: options.db,
          dedupeWindowMs,
          intervalMs: options.pruner?.intervalMs,
          batchSize: options.pruner?.batchSize,
          logger: log,
        });
  // Removals of dead-lettered originals still running, awaited at close.
  const removals = new Set<Promise<void>>();
  const groups =
    options.groupCommit === false
      ? undefined
      : createCommitGroups(options.db, { fault: options.fault, ...options.groupCommit });
  const pipeline = createPipeline({
    db: options.db,
    tokens,
    registry: options.registry,
    leaseMs: lockDurationMs,
    tokenTtlMs: options.tokenTtlMs ?? DEFAULT_TOKEN_TTL_MS,
    processId,
    conflictRetry: options.conflictRetry,
    fault: options.fault,
    logger: options.logger,
    onOutcome: options.onOutcome,
    deadLetters,
    dedupeWindowMs,
    ids,
    onFollowUps: () => outbox?.nudge(),
    groups,
  });
  const queues = options.queues?.length ? options.queues : options.registry.queues();
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  const bullQueues = queues.flatMap((logical) => {
    const names = partitionQueueNames(logical, partitionCount(partitions, logical));
    return names.map((name, i) => ({ name, concurrency: shareOf(concurrency, names.length, i) }));
  });

  const workers = bullQueues.map(({ name: queue, concurrency: share }) => {
    const worker = options.backend.newWorker(queue, (job, token) => pipeline.process(job, token), {
      concurrency: share,
      lockDuration: lockDurationMs,
      stalledInterval: lockDurationMs,
      maxStalledCount: options.maxStalledCount ?? DEFAULT_MAX_STALLED_COUNT,
    });
    worker.on('error', (err) => log?.error({ err, queue }, 'worker error'));
    if (log?.isLevelEnabled('debug')) {
      worker.on('completed', (job, value: { outcome?: string }) =>
        log.debug(
          { jobId: job.id, messageId: job.data?.messageId, queue, outcome: value?.outcome },
          'job completed',
        ),
      );
    }
    worker.on('failed', (job, err) => {
      // The last step of a dead-letter move: the copies are written, the original goes. If the
      // process dies first, the original stays in the failed set (replay and purge remove it).
      if (job && err instanceof DeadLetteredError) {
        const removal = deadLetters.removeOriginal(queue, String(job.id));
        removals.add(removal);
        void removal.finally(() => removals.delete(removal));
      }
      log?.warn(
        {
          jobId: job?.id,
          messageId: job?.data?.messageId,
          queue,
          attempts: job?.attemptsMade,
          err: err.message,
        },
        'job failed',
      );
    });
    return worker;
  });
  for (const worker of workers) {
    void worker.run().catch((err) => log?.error({ err }, 'worker stopped with an error'));
  }
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  outbox?.start();
  reconciler?.start();
  pruner?.start();
  const retention = options.completedJobRetentionMs ?? DEFAULT_COMPLETED_JOB_RETENTION_MS;
  const trimQueues = retention === false ? undefined : createQueueCache(options.backend);
  const trimmer =
    retention === false
      ? undefined
      : startCompletedJobTrimmer({
          queues: () => bullQueues.map(({ name }) => trimQueues!.get(name)),
          keepMs: retention,
          onError: (err, queue) => log?.warn({ err, queue }, 'could not trim completed jobs'),
        });

  /** Moves released jobs from active to delayed-until-now, with the lock tokens they held. */
  async function putBack(released: { job: Job; bullToken?: string }[]): Promise<void> {
    if (released.length === 0) return;
    const queues = createQueueCache(options.backend);
    try {
      await Promise.all(
        released.map(async ({ job, bullToken }) => {
          if (!bullToken || job.id === undefined) return;
          const again = await Job.fromId(queues.get(job.queueName), job.id);
          // Refused when the lock is no longer ours (already stalled and taken): nothing to do.
          await again?.moveToDelayed(Date.now(), bullToken).catch(() => undefined);
        }),
      );
    } catch (err) {
      log?.warn({ err }, 'could not put released jobs back; BullMQ will find them stalled');
    } finally {
      await queues.close();
    }
  }

  let closing: Promise<{ forced: boolean }> | undefined;
  return {
    processId,
    queues: Object.freeze([...queues]),
    workers,
    pipeline,
    outbox,
    reconciler,
    pruner,
    groupCommitStats: () => groups?.stats(),
    close(timeoutMs = 10_000) {
      closing ??= (async () => {
        // Stop intake, then wait for the pipeline to go idle; close only after. BullMQ keeps the
        // promise of the first close() call, so a graceful close() followed by close(true) would
        // still wait for every running job, and a waiting pause() reconnects its blocking
        // connection when the jobs end, after the close.
        await Promise.all(workers.map((w) => w.pause(true)));
        const graceful = pipeline.idle().then(() => false);
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<true>((resolve) => {
          timer = setTimeout(() => resolve(true), timeoutMs);
        });
        const forced = await Promise.race([graceful, timeout]);
        clearTimeout(timer);
        const released = forced ? await pipeline.releaseAll() : [];
        if (forced) {
          log?.warn(
            { released: released.length },
            'shutdown bound reached; released in-flight claims',
          );
        }
        await Promise.all(workers.map((w) => w.close(forced)));
        // Only now, with no worker of ours left to fetch them again: put the released jobs back
        // (delayed until now, which spends no attempt), so another process takes them at once
        // instead of after BullMQ's stalled-job check, one or two lock durations later.
        await putBack(released);
        await Promise.all([
          outbox?.close(),
          reconciler?.close(),
          pruner?.close(),
          partitionMaintainer?.close(),
          trimmer?.close(),
          tokenSweep?.close(),
        ]);
        await trimQueues?.close();
        await Promise.all([...removals]);
        await deadLetters.close();
        await tokenStore.close();
        if (idService) await (await idService.catch(() => undefined))?.close();
        return { forced };
      })();
      return closing;
    },
  };
}

/**
 * Partition `index`'s share of a queue's `concurrency` over `count` partitions: the remainder
 * goes to the first ones, and every partition gets at least one.
 */
function shareOf(concurrency: number, count: number, index: number): number {
  const base = Math.floor(concurrency / count);
  return Math.max(1, base + (index < concurrency % count ? 1 : 0));
}
