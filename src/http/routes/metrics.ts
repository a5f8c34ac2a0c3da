/**
 * `GET /metrics`: the process's Prometheus metrics (metrics/metrics.ts). Like every route but the
 * health checks it needs an API key (DESIGN.md section 3): give Prometheus one of its own
 * (`authorization: { credentials: … }` in the scrape config). Workers serve theirs without a key
 * on `ONCEQ_METRICS_PORT`, which belongs on a private network.
 */
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../../metrics/metrics.js';
import { BEARER } from '../schemas.js';

/** Registers the route. */
export function metricsRoutes(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', async (request, reply) => {
    // The route pattern, never the raw URL: job ids in paths would make a series per job.
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.httpSeconds.observe(
      { method: request.method, route, status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics of this process',
        tags: ['operations'],
        security: BEARER,
        produces: ['text/plain'],
      },
    },
    async (_request, reply) => {
      const text = await metrics.text();
      reply.header('content-type', metrics.contentType).header('cache-control', 'no-store');
      return text;
    },
  );
}
