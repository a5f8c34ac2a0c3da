/**
 * The producer API's figures for `onceq bench` (DESIGN.md section 8): `POST /v1/jobs` through
 * the whole API (authentication, rate limiting off, body scan, schema, token acceptance in
 * Redis, the accepted row in PostgreSQL, `queue.add`) against a bare Fastify route that only
 * calls `queue.add` with the same body. Both listen on loopback and are driven by autocannon in
 * a child process (so the load generator does not share the server's event loop), with the same
 * connections and the same number of requests.
 *
 * Every API request needs a fresh token: they are issued in bulk before the clock starts and fed
 * to the requests one by one through autocannon's `setupRequest`, so issuing is not measured.
 */
import { fork } from 'node:child_process';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Db } from '../db/create-db.js';
import type { JobRegistry } from '../jobs/registry.js';
import { createProducer } from '../producer/producer.js';
import { buildApp } from '../http/build-app.js';
import { mintApiKey } from '../core/api-key.js';
import { insertApiKey } from '../db/api-keys.repository.js';
import type { CannonRequest, CannonResult } from './cannon-child.js';

/** One measured run, in the shape the bench summarises (jobs = requests here). */
export interface ApiMeasured {
  seconds: number;
  /** Requests sent (the rate's numerator). */
  items: number;
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

/** Runs `requests` POSTs at `url` + `path` from a child process (see cannon-child.ts). */
async function cannon(
  url: string,
  path: string,
  options: ApiBenchOptions,
  headers: Record<string, string>,
  tokens?: string[],
): Promise<ApiMeasured> {
  const request: CannonRequest = {
    url,
    path,
    connections: options.connections,
    amount: options.requests,
    body: JSON.stringify({ name: options.job.name, data: options.job.data }),
    headers,
    tokens,
  };
  // The same loader as this process (tsx in development, plain node for the build).
  const here = fileURLToPath(import.meta.url);
  const child = fork(join(dirname(here), `cannon-child${extname(here)}`), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  try {
    const result = await new Promise<CannonResult>((resolve, reject) => {
      child.once('message', (m) => resolve(m as CannonResult));
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`api bench: load generator exited ${code}`)));
      child.send(request);
    });
    if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
      throw new Error(
        `api bench: ${result.non2xx} non-2xx answers, ${result.errors} errors, ` +
          `${result.timeouts} timeouts`,
      );
    }
    return {
      seconds: result.seconds,
      items: result.latenciesMs.length,
      latenciesMs: result.latenciesMs,
      rssMb: process.memoryUsage().rss / 2 ** 20,
    };
  } finally {
    if (child.exitCode === null) child.kill();
  }
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
    return await cannon(
      address,
      '/v1/jobs',
      options,
      { authorization: `Bearer ${minted.key}` },
      tokens,
    );
  } finally {
    await app.close();
    await producer.close();
  }
}
