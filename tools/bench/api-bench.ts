/**
 * The producer API's figures for `onceq bench` (DESIGN.md section 8): `POST /v1/jobs` through
 * the whole API (authentication, rate limiting off, body scan, schema, token acceptance in
 * Redis, the accepted row in PostgreSQL, `queue.add`) against a bare Fastify route that only
 * calls `queue.add` with the same body. Both listen on loopback and are driven by autocannon in
 * a child process (so the load generator does not share the server's event loop), with the same
 * connections and the same number of requests.
 *
 * Between the two, `api-stores`: a bare route that does only the three writes the contract asks
 * of every enqueue (the token accepted in Redis, the acceptance committed to PostgreSQL through
 * the same group-commit writer, `queue.add`), without authentication, validation, fingerprint or
 * error mapping. api-stores / api-bare is what those writes cost on this machine; api-jobs /
 * api-stores is what the API adds on top of them.
 *
 * Every tokened request needs a fresh token: they are issued in bulk before the clock starts and
 * fed to the requests one by one through autocannon's `setupRequest`, so issuing is not measured.
 */
import { fork } from 'node:child_process';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Db } from '../../src/db/create-db.js';
import type { JobRegistry } from '../../src/jobs/registry.js';
import {
  createProducer,
  DEFAULT_IN_FLIGHT_MS,
  type Producer,
} from '../../src/producer/producer.js';
import { createAcceptanceWriter } from '../../src/db/accepted-messages.repository.js';
import { createTokenStore } from '../../src/redis/token-store.js';
import { closeRedis } from '../../src/redis/connection.js';
import { jobIdFor, type MessageEnvelope } from '../../src/core/message.js';
import { DEFAULT_MAX_OUTSTANDING_TOKENS } from '../../src/core/limits.js';
import { messageJobOptions } from '../../src/queues/message-job-options.js';
import { buildApp } from '../../src/http/build-app.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import type { CannonRequest, CannonResult } from './cannon-child.js';
import type { Backend } from '../../src/queues/backend.js';

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
  /** The same Redis and prefix as the producer's backend. */
  backend: Backend;
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

/** Issues `count` tokens to `principal`, 1,000 per round trip. */
async function issueTokens(
  producer: Producer,
  principal: string,
  count: number,
): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < count; i += 1000) {
    const batches = Math.min(10, Math.ceil((count - i) / 100));
    const issued = await Promise.all(
      Array.from({ length: batches }, () => producer.issueTokens({ principal, count: 100 })),
    );
    for (const batch of issued) tokens.push(...batch.map((t) => t.token));
  }
  return tokens;
}

/** A producer over the bench's connections (its token connection and queues are its own). */
function benchProducer(options: ApiBenchOptions): Producer {
  return createProducer({
    db: options.db,
    backend: options.backend,
    registry: options.registry,
    ids: options.ids,
    // Every request of a round gets its token before the round starts (30,000 or more), and a
    // round's unanswered requests leave theirs: far past the default bound, which is for
    // clients. Still bounded, so the accepts pay for taking tokens out of the count as in use.
    maxOutstandingTokens: 10 * Math.max(options.requests, DEFAULT_MAX_OUTSTANDING_TOKENS),
  });
}

/**
 * `api-stores`: a bare route doing the producer's three writes and nothing else, over the same
 * kind of connections as the producer (token scripts auto-pipelined, BullMQ on the plain one).
 */
export async function runStoresRoute(options: ApiBenchOptions): Promise<ApiMeasured> {
  const PRINCIPAL = 'bench-stores';
  const TTL_MS = 24 * 3_600_000; // the producer's default token ttl, as api-jobs uses
  const producer = benchProducer(options);
  const tokenRedis = options.redis.duplicate({ enableAutoPipelining: true });
  const tokens = createTokenStore(tokenRedis, { prefix: options.prefix });
  const acceptance = createAcceptanceWriter(options.db);
  const queue = new Queue(options.job.queue, { connection: options.redis, prefix: options.prefix });
  const app = Fastify({ logger: false });
  app.post('/', async (request, reply) => {
    const { name, data } = request.body as { name: string; data: unknown };
    const token = request.headers['idempotency-key'] as string;
    // Unique per request and as long as a real one (sha256:<64 hex>); computing it is the API's
    // work, not a write.
    const fingerprint = `sha256:${token.padEnd(64, '0')}`;
    const accepted = await tokens.accept(token, {
      principal: PRINCIPAL,
      fingerprint,
      messageId: options.ids.nextId(),
      ttlMs: TTL_MS,
      inFlightMs: DEFAULT_IN_FLIGHT_MS,
    });
    if (accepted.status !== 'accepted') throw new Error(`token not accepted: ${accepted.status}`);
    const { messageId } = accepted;
    await acceptance.record({
      messageId,
      principal: PRINCIPAL,
      token,
      fingerprint,
      queue: options.job.queue,
      jobName: name,
      data,
      jobId: jobIdFor(messageId),
      options: {},
    });
    const envelope: MessageEnvelope = { messageId, token, data };
    await queue.add(name, envelope, messageJobOptions(messageId));
    return reply.code(202).send({ jobId: jobIdFor(messageId), messageId });
  });
  try {
    const issued = await issueTokens(producer, PRINCIPAL, options.requests);
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    return await cannon(address, '/', options, {}, issued);
  } finally {
    await app.close();
    await queue.close();
    await closeRedis(tokenRedis);
    await producer.close();
  }
}

/** `api-jobs`: `POST /v1/jobs` through the whole API, a fresh token per request. */
export async function runApiRoute(options: ApiBenchOptions): Promise<ApiMeasured> {
  const producer = benchProducer(options);
  const minted = mintApiKey();
  await insertApiKey(options.db, {
    id: minted.id,
    principal: 'bench',
    hash: minted.hash,
    admin: false,
  });
  const tokens = await issueTokens(producer, 'bench', options.requests);
  const app = await buildApp({
    db: options.db,
    backend: options.backend,
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
