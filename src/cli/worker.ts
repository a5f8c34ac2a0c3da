/**
 * `onceq worker` (and the worker half of `onceq start`): consume the queues until SIGTERM/SIGINT,
 * then finish or release in-flight jobs within ONCEQ_SHUTDOWN_TIMEOUT and exit 0.
 */
import { loadRegistry } from '../jobs/registry.js';
import { migrateToLatest, ensureDatabase } from '../db/migrate.js';
import { loadConfig } from '../config.js';
import { startWorker } from '../worker/worker.js';
import { createFaultHook } from '../worker/fault-hook.js';
import { openRuntime, waitForShutdownSignal } from './runtime.js';

/** Options of {@link runWorker}. */
export interface RunWorkerOptions {
  /** Run migrations first (creating the database if missing). */
  migrate?: boolean;
}

/** Runs a worker until a signal; returns the exit code. */
export async function runWorker(options: RunWorkerOptions = {}): Promise<number> {
  if (options.migrate) await ensureDatabase(loadConfig().databaseUrl);
  const runtime = await openRuntime({ worker: true, name: 'worker' });
  const { config, logger } = runtime;
  // Listen before the first job can arrive: a signal during start-up must still shut down cleanly.
  const signalled = waitForShutdownSignal(logger);
  try {
    if (options.migrate) {
      const { results } = await migrateToLatest(runtime.db, config.databaseSchema);
      for (const r of results ?? [])
        logger.info({ migration: r.migrationName, status: r.status }, 'migration');
    }
    const registry = await loadRegistry(config.jobsModule);
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
    const { forced } = await worker.close(config.shutdownTimeoutMs);
    logger.info({ forced }, 'worker stopped');
    return 0;
  } finally {
    await runtime.close();
  }
}
