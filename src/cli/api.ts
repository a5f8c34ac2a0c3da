/**
 * `onceq api`: serves the producer HTTP API until SIGTERM/SIGINT, then stops listening, lets the
 * requests in flight finish (Fastify's `close`), closes the producer's queues, the id lease,
 * Redis and PostgreSQL, and exits 0.
 */
import { loadRegistry } from './jobs.js';
import { loadConfig, producerOptionsFrom, queueMode, type Config } from '../config.js';
import { buildApp } from '../http/build-app.js';
import { createDeadLetterLookup } from '../producer/dead-letter-lookup.js';
import { createLogger } from '../logger.js';
import { openProducer } from '../lib/create-producer.js';
import { waitForShutdownSignal } from './runtime.js';
import { resolveServices } from './services.js';
import type { Metrics } from '../metrics/metrics.js';
import { openMetrics, type OwnedMetrics } from './metrics.js';

/** Options of {@link runApi}. */
export interface RunApiOptions {
  /**
   * Stop when this settles (`onceq start` shares one signal between its halves).
   * @defaultValue the first SIGTERM or SIGINT (a second one exits at once)
   */
  stop?: Promise<unknown>;
  /** Serve these metrics at /metrics. @defaultValue metrics of its own */
  metrics?: Metrics;
  /** The configuration, services decided (cli/services.ts). @defaultValue the environment's */
  config?: Config;
}

/**
 * Runs the API until a signal; returns the exit code. The API runs on the library's producer
 * (`createProducer`), given the environment's options and the jobs of the registry.
 */
export async function runApi(options: RunApiOptions = {}): Promise<number> {
  const services = options.config ? undefined : await resolveServices(loadConfig());
  const config = options.config ?? services!.config;
  const logger = createLogger({ level: config.logLevel, name: 'api' });
  if (services) logger.info({ mode: queueMode(config) }, services.summary);
  // The registry first: a bad ONCEQ_JOBS is reported before anything is connected.
  const registry = await loadRegistry(config.jobsModule);
  const opened = await openProducer(producerOptionsFrom(config, registry.jobs(), logger), {
    name: 'onceq-api',
  });
  const { db, backend } = opened;
  const signalled = options.stop ?? waitForShutdownSignal(logger);
  let owned: OwnedMetrics | undefined;
  try {
    if (!options.metrics) {
      owned = await openMetrics(
        { config, logger, db, backend },
        { component: 'api', queues: registry.queues(), partitions: registry.partitions() },
      );
    }
    const app = await buildApp({
      db,
      backend,
      producer: opened.core,
      ids: opened.ids,
      logger,
      bodyLimit: config.bodyLimit,
      rateLimit: config.rateLimit,
      authFailureLimit: config.authFailureLimit,
      deadLetters: createDeadLetterLookup(db),
      metrics: options.metrics ?? owned?.metrics,
      adminQueues: { queues: registry.queues(), partitions: registry.partitions() },
    });
    try {
      const address = await app.listen({ port: config.port, host: config.host });
      logger.info({ address }, 'api listening');
      await signalled;
    } finally {
      await app.close();
    }
    logger.info('api stopped');
    return 0;
  } finally {
    await owned?.close();
    // Closes the queues, releases the worker id, then closes the connections.
    await opened.producer.close();
  }
}
