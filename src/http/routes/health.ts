/**
 * `GET /healthz` (the process is up) and `GET /readyz` (Redis and PostgreSQL answer). Public and
 * not rate-limited: load balancers and orchestrators call them.
 */
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { pingDatabase, type Db } from '../../db/create-db.js';
import { HealthSchema } from '../schemas.js';
import { TimeoutError, withTimeout } from '../../core/with-timeout.js';

/** How long a readiness check waits for each service. */
export const READY_CHECK_TIMEOUT_MS = 2_000;

/** Registers the routes. */
export function healthRoutes(
  app: FastifyInstance,
  deps: { db: Db; redis: Redis; ids?: { isReady(): boolean } },
): void {
  const config = { public: true, rateLimit: false };
  app.get(
    '/healthz',
    { config, schema: { summary: 'Liveness', tags: ['health'], response: { 200: HealthSchema } } },
    async () => ({ status: 'ok' }),
  );
  app.get(
    '/readyz',
    {
      config,
      schema: {
        summary: 'Readiness: Redis and PostgreSQL answer, and message ids can be minted',
        tags: ['health'],
        response: { 200: HealthSchema, 503: HealthSchema },
      },
    },
    async (_request, reply) => {
      const [redis, postgres] = await Promise.all([
        check(() => deps.redis.ping()),
        check(() => pingDatabase(deps.db)),
      ]);
      const checks: Record<string, string> = { redis, postgres };
      // A lost worker-id lease (Redis lost its data) answers 503 until a new one can mint.
      if (deps.ids) checks['ids'] = deps.ids.isReady() ? 'ok' : 'unavailable';
      const ready = Object.values(checks).every((c) => c === 'ok');
      reply.code(ready ? 200 : 503);
      return { status: ready ? 'ready' : 'unavailable', checks };
    },
  );
}

async function check(probe: () => Promise<unknown>): Promise<string> {
  try {
    await withTimeout(probe(), READY_CHECK_TIMEOUT_MS);
    return 'ok';
  } catch (err) {
    // The reason only; connection errors can carry URLs, and this route is public.
    return err instanceof TimeoutError ? 'timeout' : 'unreachable';
  }
}
