/**
 * The producer API's figures for `onceq bench` (DESIGN.md section 8): `POST /v1/jobs` through
 * the whole API (authentication, rate limiting off, body scan, schema, token acceptance in
 * Redis, the accepted row in PostgreSQL, `queue.add`) against a bare Fastify route that only
 * calls `queue.add` with the same body. Both listen on loopback and are driven by autocannon in
 * this process, with the same connections and the same number of requests.
 *
 * Every API request needs a fresh token: they are issued in bulk before the clock starts and fed
 * to the requests one by one through autocannon's `setupRequest`, so issuing is not measured.
 */
import autocannon from 'autocannon';
import Fastify from 'fastify';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Db } from '../db/create-db.js';
import type { JobRegistry } from '../jobs/registry.js';
import { createProducer } from '../producer/producer.js';
import { buildApp } from '../http/build-app.js';
import { mintApiKey } from '../core/api-key.js';
import { insertApiKey } from '../db/api-keys.repository.js';

/** One measured run, in the shape the bench summarises (jobs = requests here). */
export interface ApiMeasured {
  seconds: number;
  latenciesMs: number[];
  rssMb: number;
}

/** What both figures need. */
export interface ApiBenchOptions {
  db: Db;
  redis: Redis;
  prefix: string;
  registry: JobRegistry;
  ids: { nextId(): string };
  /** Requests per run. */
  requests: number;
  /** Concurrent connections. */
  connections: number;
  /** The job to enqueue and its data (the same body for both figures). */
  job: { name: string; data: unknown; queue: string };
}

/** Runs `requests` POSTs at `url` + `path`; `nextHeaders` adds headers to each request. */
async function cannon(
  url: string,
  path: string,
  options: ApiBenchOptions,
  headers: Record<string, string>,
  nextHeaders?: () => Record<string, string>,
): Promise<ApiMeasured> {
  const latencies: number[] = [];
  const body = JSON.stringify({ name: options.job.name, data: options.job.data });
  const t0 = performance.now();
  // autocannon notices that `amount` is reached on its 1 s tick, so the run's own duration is
  // rounded up to whole seconds; the clock stops at the last answer instead.
  let last = t0;
  let non2xx = 0;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        connections: options.connections,
        amount: options.requests,
        requests: [
          {
            method: 'POST',
            path,
            body,
            headers: { 'content-type': 'application/json', ...headers },
            ...(nextHeaders
              ? {
                  setupRequest: (request) => ({
                    ...request,
                    headers: { ...request.headers, ...nextHeaders() },
                  }),
                }
              : {}),
          },
        ],
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode < 200 || statusCode > 299) non2xx++;
      latencies.push(responseTime);
      last = performance.now();
    });
  });
  const seconds = (last - t0) / 1000;
  if (non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
    throw new Error(
      `api bench: ${non2xx} non-2xx answers, ${result.errors} errors, ${result.timeouts} timeouts`,
    );
  }
  return { seconds, latenciesMs: latencies, rssMb: process.memoryUsage().rss / 2 ** 20 };
}

/** `api-bare`: a Fastify route whose handler is `queue.add` and nothing else. */
export async function runBareRoute(options: ApiBenchOptions): Promise<ApiMeasured> {
  const queue = new Queue(options.job.queue, { connection: options.redis, prefix: options.prefix });
  const app = Fastify({ logger: false });
  app.post('/', async (request, reply) => {
    const { name, data } = request.body as { name: string; data: unknown };
    const job = await queue.add(name, data);
    return reply.code(202).send({ jobId: job.id });
  });
  try {
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    return await cannon(address, '/', options, {});
  } finally {
    await app.close();
    await queue.close();
  }
}

/** `api-jobs`: `POST /v1/jobs` through the whole API, a fresh token per request. */
export async function runApiRoute(options: ApiBenchOptions): Promise<ApiMeasured> {
  const producer = createProducer({
    db: options.db,
    redis: options.redis,
    prefix: options.prefix,
    registry: options.registry,
    ids: options.ids,
  });
  const minted = mintApiKey();
  await insertApiKey(options.db, {
    id: minted.id,
    principal: 'bench',
    hash: minted.hash,
    admin: false,
  });
  const tokens: string[] = [];
  for (let i = 0; i < options.requests; i += 1000) {
    const batches = Math.min(10, Math.ceil((options.requests - i) / 100));
    const issued = await Promise.all(
      Array.from({ length: batches }, () =>
        producer.issueTokens({ principal: 'bench', count: 100 }),
      ),
    );
    for (const batch of issued) tokens.push(...batch.map((t) => t.token));
  }
  const app = await buildApp({
    db: options.db,
    redis: options.redis,
    producer,
    rateLimit: false,
    docs: false,
  });
  try {
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    let next = 0;
    return await cannon(
      address,
      '/v1/jobs',
      options,
      { authorization: `Bearer ${minted.key}` },
      () => ({
        'idempotency-key': tokens[next++ % tokens.length]!,
      }),
    );
  } finally {
    await app.close();
    await producer.close();
  }
}
