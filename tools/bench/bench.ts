/**
 * `onceq bench` / `npm run bench`: throughput of onceq against baselines measured in the same
 * run on the same machine (DESIGN.md section 8). Ratios are what to compare across machines;
 * absolute figures move with the machine's load. Each figure is the median of several runs.
 *
 *   bullmq-noop         BullMQ, a processor that does nothing
 *   bullmq-insert       at-least-once: BullMQ plus one plain INSERT per job
 *   onceq-insert        onceq exactly-once, the same INSERT as the handler
 *   onceq-insert-dup30  the same with 30% of deliveries duplicates of earlier messages
 *   onceq-transfer      onceq running ledger.transfer between 1,000 accounts
 *   api-bare            HTTP: a bare Fastify route that only calls queue.add (requests/s)
 *   api-stores          HTTP: a bare route doing only the writes every enqueue needs: token
 *                       accepted in Redis, acceptance committed to PostgreSQL, queue.add
 *   api-jobs            HTTP: POST /v1/jobs through the producer API, a fresh token each
 *                       (requests/s; `concurrency` is connections, `jobs` requests but at
 *                       least 30,000; autocannon runs in a child process)
 *   dlq-replay          `onceq dlq replay --all` of 20,000 dead letters back to their queue
 *                       (letters/s; the seeding is not timed, no worker runs)
 */
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Queue, Worker, type Job, type JobsOptions } from 'bullmq';
import { sql } from 'kysely';
import { Type } from '@sinclair/typebox';
import { loadConfig } from '../../src/config.js';
import { createDb, checkDatabase, type Db } from '../../src/db/create-db.js';
import { ensureDatabase } from '../../src/db/migrate.js';
import { migrateWithLedger } from '../../src/jobs/examples/ledger/migrations.js';
import { createRedis, checkRedis, closeRedis } from '../../src/redis/connection.js';
import { allKeysPattern } from '../../src/redis/keys.js';
import { JobRegistry } from '../../src/jobs/registry.js';
import { ledgerJobs } from '../../src/jobs/examples/ledger/index.js';
import { defineJob } from '../../src/jobs/define-job.js';
import { startWorker } from '../../src/worker/worker.js';
import { jobIdFor, type MessageEnvelope } from '../../src/core/message.js';
import { SnowflakeGenerator } from '../../src/ids/snowflake-generator.js';
import { generateToken } from '../../src/core/token.js';
import { ErrorCode, OnceqError } from '../../src/core/errors.js';
import type { Redis } from 'ioredis';
import { runApiRoute, runBareRoute, runStoresRoute, type ApiBenchOptions } from './api-bench.js';
import { replayDeadLetters } from '../../src/worker/dead-letter-replay.js';

/** Options of {@link runBench} (strings: they come from the command line). */
export interface BenchOptions {
  jobs?: string;
  concurrency?: string;
  runs?: string;
  json?: string;
  only?: string;
}

/** One measured figure. */
export interface Figure {
  name: string;
  concurrency: number;
  jobs: number;
  runs: number;
  jobsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  rssMb: number;
}

const BENCH_QUEUE = 'bench';
/** The same completed-job retention in every figure, so BullMQ does the same work in each. */
const REMOVE_ON_COMPLETE = { count: 1000 };

/** The handler of the onceq figures: the same single INSERT as the at-least-once baseline. */
const benchInsert = defineJob({
  name: 'bench.insert',
  queue: BENCH_QUEUE,
  schema: Type.Object({ n: Type.Integer() }),
  async handle(ctx) {
    await ctx.insertOnce('bench_events', { id: ctx.messageId, n: ctx.data.n });
    return { status: 'applied' };
  },
});

const transferOnBench = { ...ledgerJobs[2], queue: BENCH_QUEUE };

export async function runBench(options: BenchOptions): Promise<number> {
  const jobs = positive(options.jobs ?? '5000', '--jobs');
  const concurrency = positive(options.concurrency ?? '50', '--concurrency');
  const runs = positive(options.runs ?? '3', '--runs');
  const only = options.only?.split(',');
  const config = loadConfig();
  await ensureDatabase(config.databaseUrl);
  const schema = `bench_${randomBytes(4).toString('hex')}`;
  const prefix = `onceq-bench-${randomBytes(4).toString('hex')}`;
  const db = createDb({
    url: config.databaseUrl,
    schema,
    poolSize: config.poolSize,
    applicationName: 'onceq-bench',
  });
  const redis = createRedis({ url: config.redisUrl, connectionName: 'onceq-bench' });
  const figures: Figure[] = [];
  try {
    await checkRedis(redis, config.redisUrl);
    await checkDatabase(db, config.databaseUrl);
    await migrateWithLedger(db, schema);
    await sql`create table bench_events (id bigint primary key, n integer not null)`.execute(db);
    const ids = new SnowflakeGenerator({ workerId: 1 });
    const registry = new JobRegistry([benchInsert, transferOnBench as (typeof ledgerJobs)[2]]);
    const accounts = await openBenchAccounts(db, ids, 1_000);

    const scenarios: { name: string; run: () => Promise<Measured> }[] = [
      {
        name: 'bullmq-noop',
        run: () => runBaseline(ids, redis, prefix, jobs, concurrency, async () => undefined),
      },
      {
        name: 'bullmq-insert',
        run: () =>
          runBaseline(ids, redis, prefix, jobs, concurrency, async (job) => {
            await db
              .insertInto('bench_events' as never)
              .values({ id: job.data.id, n: job.data.n } as never)
              .execute();
          }),
      },
      {
        name: 'onceq-insert',
        run: () =>
          runOnceq(db, redis, prefix, registry, ids, jobs, concurrency, 0, 'insert', accounts),
      },
      {
        name: 'onceq-insert-dup30',
        run: () =>
          runOnceq(db, redis, prefix, registry, ids, jobs, concurrency, 0.3, 'insert', accounts),
      },
      {
        name: 'onceq-transfer',
        run: () =>
          runOnceq(db, redis, prefix, registry, ids, jobs, concurrency, 0, 'transfer', accounts),
      },
      { name: 'api-bare', run: () => runBareRoute(apiOptions()) },
      { name: 'api-stores', run: () => runStoresRoute(apiOptions()) },
      { name: 'api-jobs', run: () => runApiRoute(apiOptions()) },
      { name: 'dlq-replay', run: () => runDlqReplay(db, redis, prefix, ids, DLQ_REPLAY_LETTERS) },
    ];
    function apiOptions(): ApiBenchOptions {
      return {
        db,
        redis,
        prefix,
        registry,
        ids,
        // At least API_MIN_REQUESTS: 5,000 requests last a quarter of a second on the bare route,
        // which then measures the JIT warming up rather than the route.
        requests: Math.max(jobs, API_MIN_REQUESTS),
        connections: concurrency,
        job: { name: benchInsert.name, data: { n: 1 }, queue: BENCH_QUEUE },
      };
    }
    for (const spec of (process.env.GCSET ?? '').split(';').filter(Boolean)) {
      for (const w of ['insert', 'transfer'] as const) {
        scenarios.push({
          name: `onceq-${w}[${spec}]`,
          run: () =>
            runOnceq(db, redis, prefix, registry, ids, jobs, concurrency, 0, w, accounts, spec),
        });
      }
    }
    const chosen = scenarios.filter((sc) => !only || only.includes(sc.name) || sc.name.includes('['));
    // Rounds interleave the figures (A B C, A B C, …) so a burst of load from elsewhere on a
    // shared machine lands on every figure alike, and medians of the rounds are reported.
    const measured = new Map<string, Measured[]>(chosen.map((sc) => [sc.name, []]));
    for (let r = 0; r < runs; r++) {
      for (const scenario of chosen) {
        await cleanPrefix(redis, prefix);
        const m = await scenario.run();
        measured.get(scenario.name)!.push(m);
        process.stderr.write(
          `round ${r + 1}/${runs} ${scenario.name}: ${Math.round((m.items ?? jobs) / m.seconds)} jobs/s\n`,
        );
      }
    }
    for (const scenario of chosen) {
      const figure = summarise(scenario.name, concurrency, jobs, measured.get(scenario.name)!);
      figures.push(figure);
      process.stdout.write(`${JSON.stringify({ bench: figure })}\n`);
    }
  } finally {
    await cleanPrefix(redis, prefix).catch(() => undefined);
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db).catch(() => undefined);
    await db.destroy();
    await closeRedis(redis);
  }
  printTable(figures);
  if (options.json)
    writeFileSync(
      options.json,
      `${JSON.stringify({ figures, ratios: ratios(figures) }, null, 2)}\n`,
    );
  return 0;
}

interface Measured {
  seconds: number;
  /** Items the run handled, when not `--jobs` (dlq-replay, the API figures). */
  items?: number;
  latenciesMs: number[];
  rssMb: number;
}

async function runBaseline(
  ids: SnowflakeGenerator,
  redis: Redis,
  prefix: string,
  jobs: number,
  concurrency: number,
  processor: (job: Job) => Promise<void>,
): Promise<Measured> {
  const queue = new Queue(BENCH_QUEUE, { connection: redis, prefix });
  await addInChunks(
    queue,
    // Ids minted before the clock starts, as onceq's messageIds are: neither side pays for them.
    Array.from({ length: jobs }, (_, n) => ({
      name: 'bench',
      data: { id: ids.nextId(), n },
      opts: { removeOnComplete: REMOVE_ON_COMPLETE },
    })),
  );
  const latencies: number[] = [];
  const done = completion(jobs);
  const worker = new Worker(
    BENCH_QUEUE,
    async (job) => {
      const t0 = performance.now();
      await processor(job);
      latencies.push(performance.now() - t0);
    },
    { connection: redis, prefix, concurrency, autorun: false },
  );
  worker.on('completed', done.tick);
  worker.on('failed', done.fail);
  const t0 = performance.now();
  void worker.run();
  await done.promise;
  const seconds = (performance.now() - t0) / 1000;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  return { seconds, latenciesMs: latencies, rssMb: process.memoryUsage().rss / 2 ** 20 };
}

async function runOnceq(
  db: Db,
  redis: Redis,
  prefix: string,
  registry: JobRegistry,
  ids: SnowflakeGenerator,
  deliveries: number,
  concurrency: number,
  duplicateShare: number,
  workload: 'insert' | 'transfer',
  accounts: string[],
  gcSpec = process.env.GC ?? 'on:2:50',
): Promise<Measured> {
  const [gcMode, gcGroups, gcSize] = gcSpec.split(':');
  const gcConfig =
    gcMode === 'off'
      ? (false as const)
      : { savepoints: gcMode === 'sp', maxGroups: Number(gcGroups), maxSize: Number(gcSize) };
  const queue = new Queue(BENCH_QUEUE, { connection: redis, prefix });
  const bulk: { name: string; data: MessageEnvelope; opts: JobsOptions }[] = [];
  const sent: MessageEnvelope[] = [];
  for (let n = 0; n < deliveries; n++) {
    if (sent.length > 0 && Math.random() < duplicateShare) {
      // A duplicate of any earlier message, as a second enqueue or a redelivery would be. Some
      // (about 1.5% of deliveries at the defaults) reach a worker while their original is still
      // running and take the pipeline's busy path: put back, then answered as a duplicate. That
      // wait is part of what the figure measures, in jobs/s and in the latencies.
      const again = sent[Math.floor(Math.random() * sent.length)]!;
      bulk.push({
        name: nameOf(workload),
        data: again,
        opts: {
          jobId: `dup-${n}-${jobIdFor(again.messageId)}`,
          removeOnComplete: REMOVE_ON_COMPLETE,
        },
      });
      continue;
    }
    const messageId = ids.nextId();
    const data =
      workload === 'insert'
        ? { n }
        : {
            fromId: accounts[n % accounts.length]!,
            toId: accounts[(n * 7 + 1) % accounts.length]!,
            amount: 1,
          };
    const envelope = { messageId, token: generateToken(), data };
    sent.push(envelope);
    bulk.push({
      name: nameOf(workload),
      data: envelope,
      opts: { jobId: jobIdFor(messageId), removeOnComplete: REMOVE_ON_COMPLETE },
    });
  }
  await addInChunks(queue, bulk);
  const latencies: number[] = [];
  const done = completion(deliveries);
  let busy = 0;
  const worker = await startWorker({
    db,
    redis,
    prefix,
    registry,
    queues: [BENCH_QUEUE],
    concurrency,
    lockDurationMs: 30_000,
    groupCommit: gcConfig,
    onOutcome: (outcome) => {
      if (outcome === 'busy') busy++;
    },
  });
  // Latency of the whole delivery, measured around the BullMQ processor, from its first start:
  // a job put back as busy starts again with a new processedOn, and its time parked counts.
  const firstStart = new Map<string, number>();
  for (const w of worker.workers) {
    w.on('active', (job) => {
      if (job.processedOn && !firstStart.has(String(job.id))) {
        firstStart.set(String(job.id), job.processedOn);
      }
    });
    w.on('completed', (job) => {
      const started = firstStart.get(String(job.id)) ?? job.processedOn;
      firstStart.delete(String(job.id));
      if (started && job.finishedOn) latencies.push(job.finishedOn - started);
      done.tick();
    });
    w.on('failed', done.fail);
  }
  const t0 = performance.now();
  await done.promise;
  const seconds = (performance.now() - t0) / 1000;
  // Said aloud: deliveries put back as busy wait a doubling backoff, which the clock includes.
  if (busy > 0) process.stderr.write(`  ${busy} deliveries found their message busy, put back\n`);
  process.stderr.write(`  groups ${JSON.stringify(worker.groupCommitStats())}\n`);
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  return { seconds, latenciesMs: latencies, rssMb: process.memoryUsage().rss / 2 ** 20 };
}

/** Fewest requests an API figure sends per round, whatever `--jobs` says. */
const API_MIN_REQUESTS = 30_000;

/** Dead letters the dlq-replay figure replays (the yardstick). */
const DLQ_REPLAY_LETTERS = 20_000;

/**
 * `replay --all` of `count` pending dead letters of the bench queue, through the same function
 * the CLI calls. The letters are seeded with one INSERT before the clock starts.
 */
async function runDlqReplay(
  db: Db,
  redis: Redis,
  prefix: string,
  ids: SnowflakeGenerator,
  count: number,
): Promise<Measured> {
  const messageIds = Array.from({ length: count }, () => ids.nextId());
  const tokens = messageIds.map(() => generateToken());
  await sql`
    insert into dead_letters (message_id, queue, job_name, job_id, data, token, reason, error, attempts)
    select m, ${BENCH_QUEUE}, 'bench.insert', 'm-' || m::text, jsonb_build_object('n', 1), t,
           'exhausted', 'bench', 10
    from unnest(${messageIds}::bigint[], ${tokens}::text[]) as u(m, t)`.execute(db);
  // Each letter has its visible copy in the BullMQ dead-letter queue, as the pipeline leaves it;
  // replay removes them.
  const dlq = new Queue(`${BENCH_QUEUE}.dlq`, { connection: redis, prefix });
  await addInChunks(
    dlq,
    messageIds.map((m, i) => ({
      name: 'bench.insert',
      data: { messageId: m, token: tokens[i], data: { n: 1 } },
      opts: { jobId: jobIdFor(m) },
    })),
  );
  const t0 = performance.now();
  const summary = await replayDeadLetters({ db, redis, prefix });
  const seconds = (performance.now() - t0) / 1000;
  if (summary.replayed !== count) {
    throw new Error(`dlq-replay replayed ${summary.replayed} of ${count}`);
  }
  // The timed work includes removing the visible copies: a figure that skipped it would lie.
  const copiesLeft = await dlq.count();
  if (copiesLeft !== 0) throw new Error(`dlq-replay left ${copiesLeft} copies in ${dlq.name}`);
  await sql`delete from dead_letters`.execute(db);
  const queue = new Queue(BENCH_QUEUE, { connection: redis, prefix });
  await queue.obliterate({ force: true });
  await queue.close();
  await dlq.obliterate({ force: true });
  await dlq.close();
  return { seconds, items: count, latenciesMs: [], rssMb: process.memoryUsage().rss / 2 ** 20 };
}

function nameOf(workload: 'insert' | 'transfer'): string {
  return workload === 'insert' ? 'bench.insert' : 'ledger.transfer';
}

async function openBenchAccounts(
  db: Db,
  ids: SnowflakeGenerator,
  count: number,
): Promise<string[]> {
  const rows = Array.from({ length: count }, (_, i) => ({
    id: ids.nextId(),
    owner: `bench-${i}`,
    opening_balance: '1000000000',
    balance: '1000000000',
  }));
  await db.insertInto('accounts').values(rows).execute();
  return rows.map((r) => r.id);
}

async function addInChunks(queue: Queue, jobs: Parameters<Queue['addBulk']>[0]): Promise<void> {
  for (let i = 0; i < jobs.length; i += 1000) await queue.addBulk(jobs.slice(i, i + 1000));
}

/** Resolves when `total` jobs completed; rejects at the first job that failed for good. */
function completion(total: number) {
  let seen = 0;
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return {
    promise,
    tick: () => {
      seen++;
      if (seen === total) resolve();
    },
    fail: (job: Job | undefined, err: Error) => {
      if (job && job.attemptsMade < (job.opts.attempts ?? 1)) return;
      reject(new Error(`bench job ${job?.id} failed: ${err.message}`));
    },
  };
}

async function cleanPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', allKeysPattern(prefix), 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}

function summarise(name: string, concurrency: number, jobs: number, runs: Measured[]): Figure {
  const rates = runs.map((r) => (r.items ?? jobs) / r.seconds);
  const latencies = runs.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
  return {
    name,
    concurrency,
    jobs: runs[0]?.items ?? jobs,
    runs: runs.length,
    jobsPerSecond: Math.round(median(rates)),
    p50Ms: round(quantile(latencies, 0.5)),
    p99Ms: round(quantile(latencies, 0.99)),
    rssMb: Math.round(Math.max(...runs.map((r) => r.rssMb))),
  };
}

function ratios(figures: Figure[]): Record<string, number> {
  const by = new Map(figures.map((f) => [f.name, f.jobsPerSecond]));
  const out: Record<string, number> = {};
  const base = by.get('bullmq-insert');
  if (base) {
    for (const name of ['onceq-insert', 'onceq-insert-dup30', 'onceq-transfer']) {
      const v = by.get(name);
      if (v) out[`${name} / bullmq-insert`] = round(v / base);
    }
  }
  const bare = by.get('api-bare');
  const stores = by.get('api-stores');
  const api = by.get('api-jobs');
  if (bare && api) out['api-jobs / api-bare'] = round(api / bare);
  if (bare && stores) out['api-stores / api-bare'] = round(stores / bare);
  if (stores && api) out['api-jobs / api-stores'] = round(api / stores);
  return out;
}

function printTable(figures: Figure[]): void {
  const rows = figures.map((f) => [
    f.name,
    String(f.concurrency),
    String(f.jobsPerSecond),
    f.p50Ms.toFixed(1),
    f.p99Ms.toFixed(1),
    String(f.rssMb),
  ]);
  const header = ['figure', 'conc', 'jobs/s', 'p50 ms', 'p99 ms', 'rss MB'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  process.stdout.write(`\n${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const r of rows) process.stdout.write(`${line(r)}\n`);
  for (const [k, v] of Object.entries(ratios(figures))) {
    process.stdout.write(`ratio ${k}: ${v}\n`);
    process.stdout.write(`${JSON.stringify({ ratio: k, value: v })}\n`);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}

function positive(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new OnceqError(
      ErrorCode.ConfigInvalid,
      `${flag} must be a positive integer, got ${text}`,
    );
  return n;
}
