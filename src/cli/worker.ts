/**
 * `onceq worker` (and the worker half of `onceq start`): consume the queues until SIGTERM/SIGINT,
 * then finish or release in-flight jobs within ONCEQ_SHUTDOWN_TIMEOUT and exit 0.
 */
import { loadRegistry } from '../jobs/registry.js';
import { migrateToLatest, ensureDatabase } from '../db/migrate.js';
import { loadConfig } from '../config.js';
import { startWorker } from '../worker/worker.js';
import { createFaultHook } from '../worker/fault-hook.js';
import { exitNow, openRuntime, waitForShutdownSignal } from './runtime.js';
import type { Metrics } from '../metrics/metrics.js';
import { createJobObserver } from '../metrics/job-observer.js';
import { openMetrics, type OwnedMetrics } from './metrics.js';

/**
 * How long past ONCEQ_SHUTDOWN_TIMEOUT the command waits for the worker to have released the
 * claims of deliveries still running, before it exits anyway.
 */
export const RELEASE_GRACE_MS = 1_000;

/** Options of {@link runWorker}. */
export interface RunWorkerOptions {
  /** Run migrations first (creating the database if missing). */
  migrate?: boolean;
  /**
   * Stop when this settles (`onceq start` shares one signal between its halves).
   * @defaultValue the first SIGTERM or SIGINT (a second one exits at once)
   */
  stop?: Promise<unknown>;
  /**
   * Count into these metrics and leave serving them to the caller. @defaultValue metrics of its
   * own, served on ONCEQ_METRICS_PORT when that is set
   */
  metrics?: Metrics;
}

/** Runs a worker until a signal; returns the exit code. */
export async function runWorker(options: RunWorkerOptions = {}): Promise<number> {
  if (options.migrate) await ensureDatabase(loadConfig().databaseUrl);
  const runtime = await openRuntime({ worker: true, name: 'worker', mintsIds: true });
  const { config, logger } = runtime;
  // Listen before the first job can arrive: a signal during start-up must still shut down cleanly.
  const signalled = options.stop ?? waitForShutdownSignal(logger);
  let owned: OwnedMetrics | undefined;
  try {
    if (options.migrate) {
      const { results } = await migrateToLatest(runtime.db, config.databaseSchema);
      for (const r of results ?? [])
        logger.info({ migration: r.migrationName, status: r.status }, 'migration');
    }
    const jobs = await loadRegistry(config.jobsModule);
    if (!options.metrics) {
      owned = await openMetrics(runtime, {
        component: 'worker',
        queues: config.queues.length ? config.queues : jobs.queues(),
        port: config.metricsPort,
      });
    }
    // Times handlers, counts outcomes, and logs one line per delivery.
    const metrics = options.metrics ?? owned?.metrics;
    const observer = createJobObserver({ metrics, logger });
    const registry = observer.instrument(jobs);
    const worker = await startWorker({
      db: runtime.db,
      redis: runtime.redis,
      prefix: config.prefix,
      registry,
      queues: config.queues,
      concurrency: config.concurrency,
      lockDurationMs: config.lockDurationMs,
      tokenTtlMs: config.tokenTtlMs,
      fault: createFaultHook(config.fault),
      logger,
      onOutcome: observer.onOutcome,
      dedupeWindowMs: config.dedupeWindowMs,
      maxAttempts: config.maxAttempts,
      outbox: { intervalMs: config.outboxIntervalMs },
      reconciler: {
        intervalMs: config.reconcileIntervalMs,
        graceMs: config.reconcileGraceMs,
        onPass: (report) => metrics?.observeReconcilerPass(report),
      },
      pruner: { intervalMs: config.pruneIntervalMs },
    });
    logger.info(
      {
        queues: worker.workers.map((w) => w.name),
        concurrency: config.concurrency,
        processId: worker.processId,
      },
      'worker started',
    );
    await signalled;
    // A handler still running at the bound cannot be stopped from outside: it holds a pooled
    // connection (so closing the pool would wait for it) and maybe timers (so the process would
    // not end). Past the bound, once the claims are released, the process exits instead: its
    // open transactions die with their connections and roll back, and the released jobs, put
    // back by close(), go to another worker, which claims them at once.
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((resolve) => {
      timer = setTimeout(() => resolve('deadline'), config.shutdownTimeoutMs + RELEASE_GRACE_MS);
    });
    const stopped = await Promise.race([worker.close(config.shutdownTimeoutMs), deadline]);
    clearTimeout(timer);
    if (stopped === 'deadline' || stopped.forced) {
      // The worker released the claims when the bound passed; this catches any it missed.
      const missed = await worker.pipeline.releaseAll().catch(() => []);
      logger.warn(
        { released: missed.length, inFlight: worker.pipeline.inFlightCount() },
        'worker stopped with deliveries still running; exiting without waiting for them',
      );
      return exitNow(0, logger);
    }
    logger.info({ forced: false }, 'worker stopped');
    return 0;
  } finally {
    await owned?.close();
    await runtime.close();
  }
}
