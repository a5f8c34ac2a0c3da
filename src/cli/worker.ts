/**
 * `onceq worker` (and the worker half of `onceq start`): consume the queues until SIGTERM/SIGINT,
 * then finish or release in-flight jobs within ONCEQ_SHUTDOWN_TIMEOUT and exit 0.
 */
import { loadRegistry } from './jobs.js';
import { ensureDatabase } from '../db/migrate.js';
import { loadConfig, queueMode, workerOptionsFrom, type Config } from '../config.js';
import { createFaultHook } from '../worker/fault-hook.js';
import { createLogger } from '../logger.js';
import { createDb } from '../db/create-db.js';
import { migrateWithLedger } from '../jobs/examples/ledger/migrations.js';
import { openWorker } from '../lib/create-worker.js';
import { exitNow, waitForShutdownSignal } from './runtime.js';
import { resolveServices } from './services.js';
import type { Metrics } from '../metrics/metrics.js';
import { createJobObserver } from '../metrics/job-observer.js';
import { createCommandMetrics, openMetrics, type OwnedMetrics } from './metrics.js';
import type { Logger } from 'pino';

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
  /** The configuration, services decided (cli/services.ts). @defaultValue the environment's */
  config?: Config;
}

/**
 * Runs onceq's migrations, then the ledger example's (the CLI's built-in jobs), with the CLI's
 * settings; one log line per migration run.
 */
export async function runMigrations(config: Config, logger: Logger): Promise<void> {
  await ensureDatabase(config.databaseUrl);
  const db = createDb({
    url: config.databaseUrl,
    schema: config.databaseSchema,
    poolSize: 1,
    applicationName: 'onceq-migrate',
  });
  try {
    const { onceq, ledger } = await migrateWithLedger(db, config.databaseSchema);
    for (const r of [...(onceq.results ?? []), ...(ledger.results ?? [])]) {
      logger.info({ migration: r.migrationName, status: r.status }, 'migration');
    }
  } finally {
    await db.destroy();
  }
}

/**
 * Runs a worker until a signal; returns the exit code. The worker is the library's
 * (`createWorker`), given the environment's options, the built-in ledger jobs with those of
 * `ONCEQ_JOBS`, and the CLI's metrics and fault hooks.
 */
export async function runWorker(options: RunWorkerOptions = {}): Promise<number> {
  const services = options.config ? undefined : await resolveServices(loadConfig());
  const config = options.config ?? services!.config;
  const logger = createLogger({ level: config.logLevel, name: 'worker' });
  if (services) logger.info({ mode: queueMode(config) }, services.summary);
  // The registry first: a bad ONCEQ_JOBS is reported before anything is connected.
  const jobs = await loadRegistry(config.jobsModule);
  if (options.migrate) await runMigrations(config, logger);
  // Listen before the first job can arrive: a signal during start-up must still shut down cleanly.
  const signalled = options.stop ?? waitForShutdownSignal(logger);
  // Times handlers, counts outcomes, and logs one line per delivery.
  const metrics: Metrics = options.metrics ?? createCommandMetrics('worker', logger);
  const observer = createJobObserver({ metrics, logger });
  const opened = await openWorker(workerOptionsFrom(config, jobs.jobs(), logger), {
    registry: (registry) => observer.instrument(registry),
    fault: createFaultHook(config.fault),
    onOutcome: observer.onOutcome,
    onReconcilerPass: (report) => metrics.observeReconcilerPass(report),
  });
  const { running: worker } = opened;
  let owned: OwnedMetrics | undefined;
  try {
    if (!options.metrics) {
      owned = await openMetrics(
        { config, logger, db: opened.db, backend: opened.backend },
        {
          component: 'worker',
          queues: config.queues.length ? config.queues : jobs.queues(),
          partitions: jobs.partitions(),
          port: config.metricsPort,
          metrics,
        },
      );
    }
    logger.info(
      {
        queues: worker.queues,
        partitions: Object.fromEntries(
          [...jobs.partitions()].filter(([queue, n]) => n > 1 && worker.queues.includes(queue)),
        ),
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
    // Already closed after a signal (close() is idempotent); not yet when start-up failed late,
    // say on a metrics port in use.
    await worker.close(config.shutdownTimeoutMs);
    await opened.closeConnections();
  }
}
