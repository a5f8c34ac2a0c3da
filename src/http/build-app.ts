/**
 * Builds the producer HTTP API (DESIGN.md section 3) as a Fastify instance that does not listen:
 * tests drive it with `app.inject()`, `onceq api` calls `listen`. The app owns none of the
 * connections it is given; whoever built them closes them after `app.close()`.
 *
 * Every request passes, in order: its trace span (request-tracing.ts), authentication (onRequest: 401 before anything is looked up),
 * the per-principal rate limit (preParsing: 429 before the body is read), the JSON parser (413
 * over the body limit; 400 for bad JSON, deep nesting, unsafe integers), the route's checks and
 * schema, the handler. Every error answer is problem+json (problem.ts).
 */
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Backend } from '../queues/backend.js';
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import type { Producer } from '../producer/producer.js';
import type { DeadLetterLookup } from '../producer/job-status.js';
import {
  DEFAULT_AUTH_FAILURE_LIMIT,
  DEFAULT_BODY_LIMIT,
  DEFAULT_RATE_LIMIT,
} from '../core/defaults.js';
import { ErrorCode } from '../core/errors.js';
import { createAuthenticator, DEFAULT_KEY_CACHE_MS } from './auth.js';
import { authorizationHeader } from './authorization-header.js';
import { installJsonParser } from './json-body.js';
import { problem, sendProblem, toProblem } from './problem.js';
import { ProblemSchema } from './schemas.js';
import { healthRoutes } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import { tokenRoutes } from './routes/tokens.js';
import { metricsRoutes } from './routes/metrics.js';
import { adminQueueRoutes, SELF_AUTHENTICATED } from './routes/admin-queues.js';
import type { Metrics } from '../metrics/metrics.js';
import type { QueuePartitions } from '../core/queue-partitions.js';
import { traceRequests } from './request-tracing.js';

/** Options of {@link buildApp}. */
export interface BuildAppOptions {
  db: Db;
  /** Where the queues and tokens live (Redis or PostgreSQL). */
  backend: Backend;
  /** The producer, with the connections above; its principal is replaced per request. */
  producer: Producer;
  /** The id service behind the producer; `/readyz` reports whether it can mint. */
  ids?: { isReady(): boolean };
  /** The process logger (see logger.ts; it redacts secrets). @defaultValue no logging */
  logger?: Logger;
  /** Largest request body, bytes. @defaultValue 1 MiB */
  bodyLimit?: number;
  /** Deepest JSON nesting of a body. @defaultValue 32 (json-body.ts DEFAULT_MAX_JSON_DEPTH) */
  maxJsonDepth?: number;
  /**
   * Requests per principal per window; `false` (or `max: 0`) turns the limit off. Counted in
   * this process: with N API processes a principal gets up to N times the limit.
   * @defaultValue {@link DEFAULT_RATE_LIMIT}
   */
  rateLimit?: { max: number; windowMs: number } | false;
  /** How long API key rows are cached. @defaultValue 5 s */
  keyCacheMs?: number;
  /**
   * Failed authentications per client address (the socket's: `trustProxy` is off) per window;
   * past it the address gets 429 before any key lookup. `false` (or `max: 0`) turns it off.
   * Counted in this process. @defaultValue {@link DEFAULT_AUTH_FAILURE_LIMIT}
   */
  authFailureLimit?: { max: number; windowMs: number } | false;
  /** Finds dead letters for job status (the dead-letter queue plugs in here). */
  deadLetters?: DeadLetterLookup;
  /** Serve the OpenAPI document and its UI at /docs. @defaultValue true */
  docs?: boolean;
  /** Serve these metrics at `GET /metrics`. @defaultValue no route */
  metrics?: Metrics;
  /**
   * Mount Bull Board at `/admin/queues` (admin keys only) over these work queues (each partition
   * of a partitioned one) and their dead-letter queues, on the backend. @defaultValue no board
   */
  adminQueues?: { queues: readonly string[]; partitions?: QueuePartitions };
}

/** Routes anyone may call: health checks and the API's documentation. */
function isPublic(request: FastifyRequest): boolean {
  const config = request.routeOptions.config as unknown as Record<string, unknown> | undefined;
  // Bull Board's routes check the key themselves (they also take it as HTTP Basic).
  if (config?.[SELF_AUTHENTICATED] === true) return true;
  return config?.public === true || (request.routeOptions.url ?? '').startsWith('/docs');
}

/** Builds the app; `await app.ready()` (or `inject`) to finish loading its plugins. */
export async function buildApp(options: BuildAppOptions): Promise<FastifyInstance> {
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const app = Fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
    bodyLimit,
    // Behind a proxy, X-Forwarded-* would decide who a client is; onceq trusts only the socket.
    trustProxy: false,
    ajv: {
      customOptions: {
        // Request bodies are fingerprinted as sent: Fastify's defaults would coerce "5" into 5
        // and drop unknown properties, so two different requests could look the same.
        coerceTypes: false,
        removeAdditional: false,
        useDefaults: false,
        // Stop at the first failing keyword. With allErrors Ajv allocates one error per failing
        // value, unbounded: a 1 MiB body of unknown properties is 100,000 of them. The request
        // envelope has five fields; the job's data is validated by the registry, which lists
        // every failing field of data of ordinary size.
        allErrors: false,
      },
    },
  }) as unknown as FastifyInstance;
  // First: the request's span is active for every hook and handler after it.
  traceRequests(app);

  app.addSchema(ProblemSchema);
  app.decorateRequest('principal', '');
  app.decorateRequest('admin', false);

  app.setErrorHandler((err, request, reply) => {
    const mapped = toProblem(err);
    if (mapped.fault) request.log.error({ err }, 'request failed');
    return sendProblem(reply, mapped.body, mapped.headers);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      reply,
      problem(ErrorCode.NotFound, `no route ${request.method} ${request.url.split('?')[0]}`),
    ),
  );

  const authenticate = createAuthenticator({
    db: options.db,
    cacheMs: options.keyCacheMs ?? DEFAULT_KEY_CACHE_MS,
    failureLimit: options.authFailureLimit ?? DEFAULT_AUTH_FAILURE_LIMIT,
    onFailure: options.metrics && ((result) => options.metrics!.authFailures.inc({ result })),
  });
  app.addHook('onRequest', async (request) => {
    if (isPublic(request)) return;
    const identity = await authenticate(authorizationHeader(request), request.ip);
    request.principal = identity.principal;
    request.admin = identity.admin;
  });

  installJsonParser(app, { bodyLimit, maxDepth: options.maxJsonDepth });

  const limit = options.rateLimit ?? DEFAULT_RATE_LIMIT;
  if (limit && limit.max > 0) {
    await app.register(rateLimit, {
      global: true,
      max: limit.max,
      timeWindow: limit.windowMs,
      // After authentication, so the key is the principal; before the body is read.
      hook: 'preParsing',
      keyGenerator: (request) =>
        request.principal ? `p:${request.principal}` : `ip:${request.ip}`,
      errorResponseBuilder: (_request, context) =>
        Object.assign(
          new Error(`rate limit of ${context.max} requests per ${context.after} exceeded`),
          {
            statusCode: 429,
          },
        ),
    });
  }

  if (options.docs ?? true) {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'onceq producer API',
          version: '1',
          description:
            'Enqueue jobs exactly once: get a token from POST /v1/tokens, send it as ' +
            'Idempotency-Key with POST /v1/jobs, retry freely. Errors are application/problem+json ' +
            'with a stable `code`.',
        },
        components: {
          securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } },
        },
      },
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
  }

  healthRoutes(app, { db: options.db, backend: options.backend, ids: options.ids });
  if (options.metrics) metricsRoutes(app, options.metrics);
  if (options.adminQueues) {
    await adminQueueRoutes(app, {
      backend: options.backend,
      ...options.adminQueues,
      authenticate,
    });
  }
  tokenRoutes(app, options.producer, options.metrics);
  jobRoutes(app, { db: options.db, producer: options.producer, deadLetters: options.deadLetters });
  return app;
}
