/**
 * `onceq start`: the main job on one machine. Creates the database if missing, runs the
 * migrations, then runs the producer API and a worker in one process until SIGTERM/SIGINT.
 *
 * The two halves are `onceq api` and `onceq worker` (api.ts, worker.ts), each with its own
 * connections (so a busy worker cannot starve the API of PostgreSQL connections), sharing one
 * signal and one set of metrics: the API's `/metrics` covers both, and so does
 * `ONCEQ_METRICS_PORT` when it is set. At the first signal both stop together: the API stops
 * listening and finishes its requests, the worker finishes or releases its jobs within
 * `ONCEQ_SHUTDOWN_TIMEOUT`; then the process exits 0. A second signal exits at once (130). If
 * either half fails to start, the other is stopped and the command fails with that error.
 */
import { ensureDatabase } from '../db/migrate.js';
import { loadConfig } from '../config.js';
import { loadRegistry } from './jobs.js';
import { exitNow, openRuntime, waitForShutdownSignal } from './runtime.js';
import { openMetrics } from './metrics.js';
import { runApi } from './api.js';
import { runMigrations, runWorker, RELEASE_GRACE_MS } from './worker.js';

/**
 * Extra time, past the worker's own bound and grace, that `start` gives the API to finish its
 * requests before it exits anyway. An answer cut off is safe: acceptance is durable before any
 * 2xx, and a client retrying with its token gets the first answer.
 */
export const START_EXIT_GRACE_MS = 2_000;

/** Runs migrations, then the API and a worker until a signal; returns the exit code. */
export async function runStart(): Promise<number> {
  // The registry first: a bad ONCEQ_JOBS is reported before anything is connected.
  const config = loadConfig();
  const registry = await loadRegistry(config.jobsModule);
  await ensureDatabase(config.databaseUrl);
  const runtime = await openRuntime({ name: 'start', mintsIds: true });
  const { logger } = runtime;
  const signalled = waitForShutdownSignal(logger);
  try {
    await runMigrations(config, logger);
    const owned = await openMetrics(runtime, {
      component: 'start',
      queues: config.queues.length ? config.queues : registry.queues(),
      port: config.metricsPort,
    });
    try {
      let stopAll!: () => void;
      const stop = new Promise<void>((resolve) => (stopAll = resolve));
      void signalled.then(() => {
        stopAll();
        // Both halves bound their own shutdown; this bounds the whole, requests included.
        const bound = config.shutdownTimeoutMs + RELEASE_GRACE_MS + START_EXIT_GRACE_MS;
        setTimeout(() => {
          logger.warn({ boundMs: bound }, 'shutdown took longer than its bound; exiting now');
          exitNow(0, logger);
        }, bound).unref();
      });
      const halves = [
        runApi({ stop, metrics: owned.metrics }),
        runWorker({ stop, metrics: owned.metrics }),
      ].map((half) =>
        half.catch((err: unknown) => {
          // One half failed (to start, usually): stop the other, then report the failure.
          stopAll();
          throw err;
        }),
      );
      const settled = await Promise.allSettled(halves);
      const failed = settled.find((s) => s.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      const codes = settled.map((s) => (s as PromiseFulfilledResult<number>).value);
      logger.info('stopped');
      return Math.max(...codes);
    } finally {
      await owned.close();
    }
  } finally {
    await runtime.close();
  }
}
