/**
 * `npm run soak`: many messages through one `onceq start` (the compiled product, API and worker in
 * one process), sent over HTTP with `onceq/client`, while the process's RSS and Redis's
 * `used_memory` are sampled every `--sample` (10 s). It answers three questions:
 *
 * - does the process's memory stay flat? The median RSS of the last quarter of the samples taken
 *   while messages flowed, against the second quarter's (the first is warm-up);
 * - how many Redis bytes does a message hold while its token lives? The growth of `used_memory`
 *   per applied message, over the samples before the first token could expire;
 * - does Redis give them back? With a short `--token-ttl` (and completed-job retention as long),
 *   `used_memory` after the run, once every token and completed job has gone, against its start.
 *
 * It runs on a private schema and key prefix and removes both afterwards. The figures are one
 * run on one machine: only the ratios travel.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { loadConfig } from '../../src/config.js';
import { createDb, checkDatabase } from '../../src/db/create-db.js';
import { ensureDatabase } from '../../src/db/migrate.js';
import { migrateWithLedger } from '../../src/jobs/examples/ledger/migrations.js';
import { createRedis, checkRedis, closeRedis } from '../../src/redis/connection.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { parseDuration, formatDuration } from '../../src/core/duration.js';
import { ErrorCode, OnceqError } from '../../src/core/errors.js';
import { createClient } from '../../src/client/index.js';
import { freePort, sleep, spawnChild } from '../support/child.js';
import { renderLineChart } from '../bench/charts.js';
import { deletePrefix } from '../support/redis.js';
import { DEFAULT_REDIS_URL } from '../../src/core/defaults.js';

/** Options of {@link runSoak} (strings: they come from the command line). */
export interface SoakOptions {
  messages?: string;
  connections?: string;
  sample?: string;
  tokenTtl?: string;
  maxBacklog?: string;
  json?: string;
  chart?: string;
}

/** One sample of the run. */
export interface SoakSample {
  /** Seconds since the start. */
  t: number;
  rssMb: number;
  redisMb: number;
  sent: number;
  applied: number;
  /** `sending`, `draining` (all sent, not all applied) or `expiring` (waiting for the ttl). */
  phase: 'sending' | 'draining' | 'expiring';
}

/** What the soak measured. */
export interface SoakReport {
  messages: number;
  connections: number;
  tokenTtlMs: number;
  seconds: number;
  messagesPerSecond: number;
  samples: SoakSample[];
  rss: { secondQuarterMedianMb: number; lastQuarterMedianMb: number; ratio: number };
  redis: {
    startMb: number;
    peakMb: number;
    endMb: number;
    /** Growth of used_memory per applied message while no token had expired yet. */
    bytesPerMessage: number;
    /** endMb minus startMb, after every token and completed job expired. */
    leftOverMb: number;
    /** Token keys still in Redis at the end (0 once the ttl has run out). */
    tokensLeft: number;
    /** Completed jobs still in Redis at the end (0 once their retention has run out). */
    completedJobsLeft: number;
    /** MEMORY USAGE of a done token key, averaged over a sample of them. */
    tokenKeyBytes: number;
    /** MEMORY USAGE of a completed job's hash, averaged over a sample of them. */
    completedJobBytes: number;
  };
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = `${ROOT}bin/onceq.js`;

export async function runSoak(options: SoakOptions): Promise<number> {
  const messages = positiveInt(options.messages ?? '1000000', '--messages');
  const connections = positiveInt(options.connections ?? '50', '--connections');
  const sampleMs = durationOption(options.sample ?? '10s', '--sample');
  const tokenTtlMs = durationOption(options.tokenTtl ?? '2m', '--token-ttl');
  const maxBacklog = positiveInt(options.maxBacklog ?? '20000', '--max-backlog');
  const config = loadConfig();
  await ensureDatabase(config.databaseUrl);
  const schema = `soak_${randomBytes(4).toString('hex')}`;
  const prefix = `onceq-soak-${randomBytes(4).toString('hex')}`;
  const db = createDb({ url: config.databaseUrl, schema, poolSize: 2, applicationName: 'soak' });
  const redis = createRedis({
    url: config.redisUrl ?? DEFAULT_REDIS_URL,
    connectionName: 'onceq-soak',
  });
  const port = await freePort();
  let child: ReturnType<typeof spawnChild> | undefined;
  let sampling = false;
  let sampler: Promise<void> = Promise.resolve();
  // Ctrl-C or a SIGTERM still removes the schema and the keys (a killed soak left 250 MB behind).
  let interrupted: (signal: NodeJS.Signals) => void = () => undefined;
  const onSignal = new Promise<never>((_, reject) => {
    interrupted = (signal) => reject(new OnceqError(ErrorCode.ConfigInvalid, `soak: ${signal}`));
  });
  onSignal.catch(() => undefined);
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    await checkRedis(redis, config.redisUrl ?? DEFAULT_REDIS_URL);
    await checkDatabase(db, config.databaseUrl);
    await migrateWithLedger(db, schema);
    const key = mintApiKey();
    await insertApiKey(db, { id: key.id, principal: 'soak', hash: key.hash, admin: false });

    child = spawnChild({
      name: 'onceq start',
      command: process.execPath,
      args: [BIN, 'start'],
      env: {
        PATH: process.env.PATH ?? '',
        REDIS_URL: config.redisUrl ?? DEFAULT_REDIS_URL,
        DATABASE_URL: config.databaseUrl,
        ONCEQ_DB_SCHEMA: schema,
        ONCEQ_PREFIX: prefix,
        PORT: String(port),
        ONCEQ_HOST: '127.0.0.1',
        ONCEQ_TOKEN_TTL: formatDuration(tokenTtlMs),
        // A done token outlives its claim's lease: a short ttl needs a lease as short.
        ONCEQ_LOCK_DURATION: formatDuration(Math.min(30_000, tokenTtlMs)),
        ONCEQ_COMPLETED_JOB_RETENTION: formatDuration(tokenTtlMs),
        ONCEQ_CONCURRENCY: String(connections),
        ONCEQ_MAX_UNUSED_TOKENS: '0',
        ONCEQ_RATE_LIMIT: '0',
        LOG_LEVEL: 'warn',
        NODE_ENV: 'production',
      },
      keepChars: 64_000,
    });
    await waitForPort(port, 60_000, child);
    const pid = child.process.pid!;
    const baseline = await usedMemory(redis);
    const started = performance.now();
    const samples: SoakSample[] = [];
    let sent = 0;
    let phase: SoakSample['phase'] = 'sending';
    const appliedCount = async () =>
      Number(
        (await sql<{ n: string }>`select count(*)::text as n from inbox`.execute(db)).rows[0]!.n,
      );
    const takeSample = async () => {
      samples.push({
        t: Math.round((performance.now() - started) / 100) / 10,
        rssMb: round((await rssBytes(pid)) / 2 ** 20),
        redisMb: round((await usedMemory(redis)) / 2 ** 20),
        sent,
        applied: await appliedCount(),
        phase,
      });
      const s = samples.at(-1)!;
      process.stderr.write(
        `soak ${s.t}s ${s.phase}: sent ${s.sent}, applied ${s.applied}, rss ${s.rssMb} MB, redis ${s.redisMb} MB\n`,
      );
    };
    sampling = true;
    sampler = (async () => {
      while (sampling) {
        await sleep(sampleMs);
        if (sampling) await takeSample();
      }
    })();
    // A failed sample (the child died) ends the run with that error, not an unhandled one.
    const samplerFailed = Promise.race([
      onSignal,
      sampler.then(
        () => new Promise<never>(() => undefined),
        (err: unknown) => Promise.reject(err),
      ),
    ]);

    // The load: `connections` loops, each issuing 100 tokens at a time and enqueueing with them.
    const client = createClient({ url: `http://127.0.0.1:${port}`, apiKey: key.key });
    let next = 0;
    // Sending pauses while the worker is this far behind: the soak measures what a message
    // holds, not a backlog growing because one process both serves and works.
    let applied = 0;
    const backlogWatch = setInterval(() => {
      void appliedCount().then(
        (n) => (applied = n),
        () => undefined,
      );
    }, 500);
    let perKey: { tokenBytes: number; jobBytes: number } | undefined;
    const load = Promise.all(
      Array.from({ length: connections }, async () => {
        let tokens: string[] = [];
        let issuedAt = 0;
        while (next < messages) {
          while (sent - applied > maxBacklog) await sleep(100);
          const n = next++;
          // A batch of tokens is used before half its ttl is gone: a connection held back by the
          // backlog (a slow machine) would otherwise send tokens that expired meanwhile.
          if (performance.now() - issuedAt > tokenTtlMs / 2) tokens = [];
          if (tokens.length === 0) {
            issuedAt = performance.now();
            tokens = (await client.issueTokens(100)).map((t) => t.token);
          }
          await client.enqueue(
            'account.open',
            { owner: `soak-${n}`, openingBalance: 1 },
            { token: tokens.pop()! },
          );
          sent++;
          // Half way, while every token and job is alive: what one of each holds.
          if (sent === Math.ceil(messages / 2))
            void keyBytes(redis, prefix).then((b) => (perKey = b));
        }
      }),
    );
    await Promise.race([load, samplerFailed]).finally(() => clearInterval(backlogWatch));
    const sentSeconds = (performance.now() - started) / 1000;
    phase = 'draining';
    while ((await appliedCount()) < messages) await Promise.race([sleep(500), samplerFailed]);
    const seconds = (performance.now() - started) / 1000;
    // Every token and completed job outlives its ttl by at most the lease and a trim interval.
    phase = 'expiring';
    const expireBy = performance.now() + tokenTtlMs + 90_000;
    let tokensLeft = await countKeys(redis, `${prefix}:~token:*`);
    let completedLeft = await completedCount(redis, prefix);
    while (performance.now() < expireBy && (tokensLeft > 0 || completedLeft > 0)) {
      await Promise.race([sleep(Math.min(5_000, tokenTtlMs)), samplerFailed]);
      tokensLeft = await countKeys(redis, `${prefix}:~token:*`);
      completedLeft = await completedCount(redis, prefix);
    }
    sampling = false;
    await sampler;
    await takeSample();

    const flowing = samples.filter((s) => s.phase === 'sending');
    const quarter = Math.floor(flowing.length / 4);
    const second = median(flowing.slice(quarter, 2 * quarter).map((s) => s.rssMb));
    const last = median(flowing.slice(flowing.length - quarter).map((s) => s.rssMb));
    const beforeExpiry = samples.filter((s) => s.t * 1000 < tokenTtlMs && s.applied > 0);
    const growth = beforeExpiry.at(-1);
    const report: SoakReport = {
      messages,
      connections,
      tokenTtlMs,
      seconds: round(seconds),
      messagesPerSecond: Math.round(messages / sentSeconds),
      samples,
      rss: {
        secondQuarterMedianMb: second,
        lastQuarterMedianMb: last,
        ratio: second > 0 ? round(last / second, 3) : 0,
      },
      redis: {
        startMb: round(baseline / 2 ** 20),
        peakMb: Math.max(...samples.map((s) => s.redisMb)),
        endMb: samples.at(-1)!.redisMb,
        bytesPerMessage: growth
          ? Math.round((growth.redisMb * 2 ** 20 - baseline) / growth.applied)
          : 0,
        leftOverMb: round(samples.at(-1)!.redisMb - baseline / 2 ** 20),
        tokensLeft,
        completedJobsLeft: completedLeft,
        tokenKeyBytes: perKey?.tokenBytes ?? 0,
        completedJobBytes: perKey?.jobBytes ?? 0,
      },
    };
    process.stdout.write(`${JSON.stringify({ soak: { ...report, samples: undefined } })}\n`);
    process.stdout.write(formatReport(report));
    if (options.json) writeFileSync(options.json, `${JSON.stringify(report, null, 2)}\n`);
    if (options.chart) {
      mkdirSync(dirname(options.chart), { recursive: true });
      writeFileSync(options.chart, await soakChart(report));
    }
    return 0;
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    sampling = false;
    await sampler.catch(() => undefined);
    await child?.stop(15_000);
    await deletePrefix(redis, prefix);
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db).catch(() => undefined);
    await db.destroy();
    await closeRedis(redis);
  }
}

/** The report as a few lines. */
export function formatReport(r: SoakReport): string {
  return [
    '',
    `messages ${r.messages} through one onceq start in ${r.seconds} s (${r.messagesPerSecond}/s sent), token ttl ${formatDuration(r.tokenTtlMs)}`,
    `RSS median: second quarter ${r.rss.secondQuarterMedianMb} MB, last quarter ${r.rss.lastQuarterMedianMb} MB (ratio ${r.rss.ratio})`,
    `Redis used_memory: start ${r.redis.startMb} MB, peak ${r.redis.peakMb} MB, end ${r.redis.endMb} MB (left over ${r.redis.leftOverMb} MB; ${r.redis.tokensLeft} token keys and ${r.redis.completedJobsLeft} completed jobs left)`,
    `Redis bytes held per message while its token lives: ${r.redis.bytesPerMessage} ` +
      `(a token key ${r.redis.tokenKeyBytes}, a completed job's hash ${r.redis.completedJobBytes}, ` +
      'plus their entries in the keyspace, the expiry table and the completed set)',
    '',
  ].join('\n');
}

/** RSS and Redis memory over time, one line each, as SVG (tools/bench/charts.ts). */
export function soakChart(r: SoakReport): Promise<string> {
  return renderLineChart({
    title: `${r.messages.toLocaleString('en')} messages through one onceq start`,
    x: { field: 't', title: 'seconds', type: 'quantitative' },
    y: { field: 'mb', title: 'MB', type: 'quantitative' },
    series: 'series',
    values: r.samples.flatMap((s) => [
      { t: s.t, mb: s.rssMb, series: 'onceq start RSS' },
      { t: s.t, mb: s.redisMb, series: 'Redis used_memory' },
    ]),
  });
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1];
  return kb ? Number(kb) * 1024 : 0;
}

async function usedMemory(redis: ReturnType<typeof createRedis>): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
}

async function countKeys(redis: ReturnType<typeof createRedis>, match: string): Promise<number> {
  let n = 0;
  for await (const keys of redis.scanStream({ match, count: 1000 })) n += (keys as string[]).length;
  return n;
}

async function completedCount(
  redis: ReturnType<typeof createRedis>,
  prefix: string,
): Promise<number> {
  return redis.zcard(`${prefix}:ledger:completed`);
}

/** Average MEMORY USAGE of up to 50 done token keys and 50 completed job hashes. */
async function keyBytes(
  redis: ReturnType<typeof createRedis>,
  prefix: string,
): Promise<{ tokenBytes: number; jobBytes: number }> {
  const [, tokenKeys] = await redis.scan('0', 'MATCH', `${prefix}:~token:*`, 'COUNT', '2000');
  // The newest: the oldest may be on their way out (the trimmer, removeOnComplete).
  const jobIds = await redis.zrange(`${prefix}:ledger:completed`, '-50', '-1');
  const usage = async (keys: string[]) => {
    const sizes = await Promise.all(keys.map((k) => redis.memory('USAGE', k, 'SAMPLES', '0')));
    const known = sizes.filter((n): n is number => typeof n === 'number');
    return known.length ? Math.round(known.reduce((a, b) => a + b, 0) / known.length) : 0;
  };
  return {
    tokenBytes: await usage(tokenKeys.slice(0, 50)),
    jobBytes: await usage(jobIds.map((id) => `${prefix}:ledger:${id}`)),
  };
}

async function waitForPort(
  port: number,
  timeoutMs: number,
  child: ReturnType<typeof spawnChild>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!child.running()) throw new Error(`onceq start exited:\n${child.tail()}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`onceq start did not listen on ${port}`);
    await sleep(200);
  }
}

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : round((sorted[mid - 1]! + sorted[mid]!) / 2);
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function positiveInt(text: string, name: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new OnceqError(ErrorCode.ConfigInvalid, `${name}=${text}: expected a positive integer`);
  }
  return n;
}

function durationOption(text: string, name: string): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms < 1_000) {
    throw new OnceqError(
      ErrorCode.ConfigInvalid,
      `${name}=${text}: expected a duration of at least 1s, such as 10s or 2m`,
    );
  }
  return ms;
}
