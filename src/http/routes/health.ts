/**
 * `GET /healthz` (the process is up) and `GET /readyz` (Redis, in Redis mode, and PostgreSQL
 * answer). Public and
 * not rate-limited: load balancers and orchestrators call them.
 */
import type { FastifyInstance } from 'fastify';
import type { Backend } from '../../queues/backend.js';
import { pingDatabase, type Db } from '../../db/create-db.js';
import { HealthSchema } from '../schemas.js';
import { TimeoutError, withTimeout } from '../../core/with-timeout.js';

/** How long a readiness check waits for each service. */
export const READY_CHECK_TIMEOUT_MS = 2_000;

/** Registers the routes. */
export function healthRoutes(
  app: FastifyInstance,
  deps: { db: Db; backend: Backend; ids?: { isReady(): boolean } },
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
      const [queues, postgres] = await Promise.all([
        deps.backend.kind === 'redis' ? check(() => deps.backend.ping()) : undefined,
        check(() => pingDatabase(deps.db)),
      ]);
      // PostgreSQL-only mode has one service to check.
      const checks: Record<string, string> = queues ? { redis: queues, postgres } : { postgres };
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
