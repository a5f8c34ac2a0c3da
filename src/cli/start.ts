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
import type { Logger } from 'pino';
import { loadConfig, queueMode, type Config } from '../config.js';
import { createLogger } from '../logger.js';
import { loadRegistry } from './jobs.js';
import type { JobRegistry } from '../jobs/registry.js';
import { resolveServices } from './services.js';
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
  const environment = loadConfig();
  const registry = await loadRegistry(environment.jobsModule);
  const early = createLogger({ level: environment.logLevel, name: 'start' });
  // From here on a signal stops everything in order, the embedded PostgreSQL last.
  const signalled = waitForShutdownSignal(early);
  // With no URLs set and no server on the default port, an embedded PostgreSQL (services.ts).
  const services = await resolveServices(environment, { embedded: true, logger: early });
  const { config, embedded } = services;
  if (!services.announced) {
    early.info({ mode: queueMode(config), embedded: false }, services.summary);
  }
  try {
    return await startWith(config, registry, early, signalled);
  } finally {
    // Last: everything that used it has closed its connections.
    await embedded?.stop();
  }
}

async function startWith(
  config: Config,
  registry: JobRegistry,
  early: Logger,
  signalled: Promise<NodeJS.Signals>,
): Promise<number> {
  // Creates the database if missing; the runtime's checks read onceq's tables.
  await runMigrations(config, early);
  const runtime = await openRuntime({ name: 'start', mintsIds: true, config });
  const { logger } = runtime;
  try {
    const owned = await openMetrics(runtime, {
      component: 'start',
      queues: config.queues.length ? config.queues : registry.queues(),
      partitions: registry.partitions(),
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
        runApi({ stop, metrics: owned.metrics, config }),
        runWorker({ stop, metrics: owned.metrics, config }),
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
