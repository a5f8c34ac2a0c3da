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
import { openRuntime, waitForShutdownSignal } from './runtime.js';

/** Runs the API until a signal; returns the exit code. */
export async function runApi(): Promise<number> {
  // The registry first: a bad ONCEQ_JOBS is reported before anything is connected.
  const registry = await loadRegistry(loadConfig().jobsModule);
  const runtime = await openRuntime({ name: 'api' });
  const { config, logger } = runtime;
  const signalled = waitForShutdownSignal(logger);
  try {
    const ids = await createIdService(runtime.redis, { prefix: config.prefix });
    try {
      const producer = createProducer({
        db: runtime.db,
        redis: runtime.redis,
        prefix: config.prefix,
        registry,
        ids,
        tokenTtlMs: config.tokenTtlMs,
        maxAttempts: config.maxAttempts,
      });
      try {
        const app = await buildApp({
          db: runtime.db,
          redis: runtime.redis,
          producer,
          logger,
          bodyLimit: config.bodyLimit,
          rateLimit: config.rateLimit,
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
    await runtime.close();
  }
}
