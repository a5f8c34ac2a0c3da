/**
 * `onceq api`: serves the producer HTTP API until SIGTERM/SIGINT, then stops listening, lets the
 * requests in flight finish (Fastify's `close`), closes the producer's queues, the id lease,
 * Redis and PostgreSQL, and exits 0.
 */
import { loadRegistry } from '../jobs/registry.js';
import { loadConfig } from '../config.js';
import { createIdService } from '../ids/id-service.js';
import { createProducer } from '../producer/producer.js';
import { buildApp } from '../http/build-app.js';
import { createDeadLetterLookup } from '../producer/dead-letter-lookup.js';
import { openRuntime, waitForShutdownSignal } from './runtime.js';
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
}

/** Runs the API until a signal; returns the exit code. */
export async function runApi(options: RunApiOptions = {}): Promise<number> {
  // The registry first: a bad ONCEQ_JOBS is reported before anything is connected.
  const registry = await loadRegistry(loadConfig().jobsModule);
  const runtime = await openRuntime({ name: 'api', mintsIds: true });
  const { config, logger } = runtime;
  const signalled = options.stop ?? waitForShutdownSignal(logger);
  let owned: OwnedMetrics | undefined;
  try {
    if (!options.metrics) {
      owned = await openMetrics(runtime, { component: 'api', queues: registry.queues() });
    }
    const ids = await createIdService(runtime.db, {
      onLost: (event) => logger.warn(event, 'worker id lost; leasing another'),
      onReacquired: (event) => logger.info(event, 'worker id leased again'),
    });
    try {
      const producer = createProducer({
        db: runtime.db,
        redis: runtime.redis,
        prefix: config.prefix,
        registry,
        ids,
        tokenTtlMs: config.tokenTtlMs,
        maxOutstandingTokens: config.maxOutstandingTokens,
        maxAttempts: config.maxAttempts,
        dedupeWindowMs: config.dedupeWindowMs,
      });
      try {
        const app = await buildApp({
          db: runtime.db,
          redis: runtime.redis,
          producer,
          ids,
          logger,
          bodyLimit: config.bodyLimit,
          rateLimit: config.rateLimit,
          authFailureLimit: config.authFailureLimit,
          deadLetters: createDeadLetterLookup(runtime.db),
          metrics: options.metrics ?? owned?.metrics,
          adminQueues: { prefix: config.prefix, queues: registry.queues() },
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
        await producer.close();
      }
    } finally {
      await ids.close();
    }
  } finally {
    await owned?.close();
    await runtime.close();
  }
}
