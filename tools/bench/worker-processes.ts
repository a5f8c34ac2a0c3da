/**
 * The `workers-*` figures of the bench: N real `onceq worker` processes (1, 2, 4) on the single
 * Redis and on a Redis Cluster, the same handler as `onceq-insert` (tools/bench/bench-jobs.ts,
 * loaded through `ONCEQ_JOBS`), and what the machine spent meanwhile, so that a figure shows
 * where its ceiling is: PostgreSQL's commits per second, and the CPU of PostgreSQL, of Redis, of
 * the workers and of the whole machine.
 *
 * The clock excludes process start-up. The jobs are added to a paused queue; the workers start
 * and are ready (each answers `/healthz` on its metrics port, which it opens only once its BullMQ
 * workers are connected); the clock starts when the queue is resumed and stops when the last of
 * the round's messages has its inbox row. Latencies are BullMQ's own stamps (finishedOn −
 * processedOn) of the last 1,000 completed jobs of each round, the retention every figure keeps.
 *
 * The commit count is `pg_stat_database.xact_commit` of the bench database, read before the
 * resume and again once the workers have exited (a backend flushes its counts when it ends;
 * before that they may lag by up to a second), less the bench's own polling. It includes the
 * few commits of the workers' start and stop, and anything else run on that database meanwhile.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JobsOptions } from 'bullmq';
import { sql } from 'kysely';
import pg from 'pg';
import type { Redis } from 'ioredis';
import { createDb, type Db } from '../../src/db/create-db.js';
import { isCluster, type RedisClient } from '../../src/redis/connection.js';
import { createRedisBackend } from '../../src/queues/redis-backend.js';
import { jobIdFor, type MessageEnvelope } from '../../src/core/message.js';
import { generateToken } from '../../src/core/token.js';
import type { SnowflakeGenerator } from '../../src/ids/snowflake-generator.js';
import { freePort, sleep, spawnChild, type Child } from '../support/child.js';
import { addInChunks, BENCH_QUEUE, benchInsert, REMOVE_ON_COMPLETE } from './bench-jobs.js';

/** Worker processes of the `workers-*` figures. */
export const WORKER_PROCESSES = [1, 2, 4] as const;

/** CPU time per process (or machine-wide) over a figure's timed window, in cores (1 = one core busy). */
export interface CpuCores {
  /** PostgreSQL: the backends of the bench database and the server's background processes. */
  postgres: number | null;
  /** Redis: every server of the target (`INFO cpu`); the single Redis may serve others too. */
  redis: number;
  /** The `onceq worker` processes, together. */
  workers: number | null;
  /** The whole machine (`/proc/stat`), whoever used it. */
  machine: number | null;
}

/** What the machine did during one timed window. */
export interface WindowUsage {
  /** Transactions committed in the bench database (PostgreSQL's commit count). */
  commits: number;
  cpu: CpuCores;
}

/** One round of a `workers-*` figure (the shape of the bench's `Measured`). */
export interface WorkerRound {
  seconds: number;
  latenciesMs: number[];
  rssMb: number;
  usage: WindowUsage;
}

/** Where the workers' queues live. */
export interface WorkerTarget {
  /** `single` (REDIS_URL) or `cluster` (REDIS_CLUSTER_NODES). */
  kind: 'single' | 'cluster';
  /** The bench's own client of it: adds, resumes, reads the completed jobs, `INFO cpu`. */
  redis: RedisClient;
  /** What the workers are told: `{ REDIS_URL }` or `{ REDIS_CLUSTER_NODES }`. */
  env: Record<string, string>;
}

/** How the `onceq worker` children are run. */
export interface WorkerCommand {
  /** `compiled`: `bin/onceq.js` over an up-to-date build; `sources`: tools/cli.ts through tsx. */
  kind: 'compiled' | 'sources';
  command: string;
  args: string[];
  cwd: string;
  /** `ONCEQ_JOBS` of the children: bench-jobs, in the same form as the command. */
  jobsModule: string;
  /** Why the sources were used, when they were. */
  why?: string;
}

const fromSources = import.meta.url.endsWith('.ts');
/** The checkout: two folders up from tools/bench, three from dist/tools/bench. */
const ROOT = fileURLToPath(new URL(fromSources ? '../..' : '../../..', import.meta.url));

/**
 * The compiled `bin/onceq.js` when every source file of src/ and tools/ has a compiled file at
 * least as new (a stale build would measure other code), else tools/cli.ts through tsx. Start-up
 * is outside the clock either way; the compiled form is what production runs.
 */
export function workerCommand(): WorkerCommand {
  const stale = staleBuildFile();
  if (stale === undefined) {
    return {
      kind: 'compiled',
      command: process.execPath,
      args: [join(ROOT, 'bin', 'onceq.js'), 'worker'],
      cwd: ROOT,
      jobsModule: join(ROOT, 'dist', 'tools', 'bench', 'bench-jobs.js'),
    };
  }
  return {
    kind: 'sources',
    command: process.execPath,
    args: ['--import', 'tsx', join(ROOT, 'tools', 'cli.ts'), 'worker'],
    cwd: ROOT,
    jobsModule: join(ROOT, 'tools', 'bench', 'bench-jobs.ts'),
    why: `the build is missing or older than ${stale} (npm run build)`,
  };
}

/** The first source file whose compiled file is missing or older, or undefined. */
function staleBuildFile(): string | undefined {
  for (const folder of ['src', 'tools']) {
    const stack = [join(ROOT, folder)];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) stack.push(path);
        else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
          const rel = path.slice(ROOT.length).replace(/^\/+/, '');
          const built = join(ROOT, 'dist', rel.replace(/\.ts$/, '.js'));
          if (!existsSync(built) || statSync(built).mtimeMs < statSync(path).mtimeMs) return rel;
        }
      }
    }
  }
  return undefined;
}

/** What every `workers-*` round needs. */
export interface WorkerBenchContext {
  db: Db;
  ids: SnowflakeGenerator;
  prefix: string;
  /** The bench's schema: the workers' ONCEQ_DB_SCHEMA. */
  schema: string;
  databaseUrl: string;
  /** ONCEQ_DB_POOL_SIZE of each worker, the bench's own. */
  poolSize: number;
  /** ONCEQ_CONCURRENCY of each worker, the bench's `--concurrency`. */
  concurrency: number;
  jobs: number;
  command: WorkerCommand;
}

/** Bound on a worker's start-up (a loaded 2-core machine starting four Node processes). */
const WORKER_START_MS = 60_000;
/** Bound on the timed window itself. */
const RUN_TIMEOUT_MS = 300_000;
/** Between two counts of the inbox. */
const POLL_MS = 20;

/**
 * One round: `jobs` messages through `processes` worker processes on `target`. Every child is
 * ended before this returns, whatever happened.
 */
export async function runWorkerProcesses(
  ctx: WorkerBenchContext,
  target: WorkerTarget,
  processes: number,
): Promise<WorkerRound> {
  const backend = createRedisBackend({ redis: target.redis, prefix: ctx.prefix });
  const queue = backend.newQueue(BENCH_QUEUE);
  const stats = statsClient(ctx.databaseUrl);
  const probe = openProbe(ctx);
  const children: Child[] = [];
  try {
    await stats.connect();
    const database = await currentDatabase(probe);
    await queue.pause();
    const firstId = ctx.ids.nextId();
    const bulk: { name: string; data: MessageEnvelope; opts: JobsOptions }[] = [];
    for (let n = 0; n < ctx.jobs; n++) {
      const messageId = n === 0 ? firstId : ctx.ids.nextId();
      bulk.push({
        name: benchInsert.name,
        data: { messageId, token: generateToken(), data: { n } },
        opts: { jobId: jobIdFor(messageId), removeOnComplete: REMOVE_ON_COMPLETE },
      });
    }
    await addInChunks(queue, bulk);

    const ports: number[] = [];
    for (let i = 0; i < processes; i++) {
      const port = await freePort();
      ports.push(port);
      children.push(
        spawnChild({
          name: `worker-${i + 1}`,
          command: ctx.command.command,
          args: ctx.command.args,
          cwd: ctx.command.cwd,
          env: workerEnv(ctx, target, port),
          keepChars: 16_384,
        }),
      );
    }
    await Promise.all(children.map((child, i) => waitForHealth(child, ports[i]!)));

    // Before the clock: PostgreSQL's count (this session's pending counts flushed first), every
    // postgres process's CPU, Redis's, the workers', the machine's.
    let ownTransactions = 0;
    const commitsBefore = await readCommits(stats, probe, database);
    const pgBefore = postgresTicks();
    const redisBefore = await redisCpuSeconds(target.redis);
    const workersBefore = sumTicks(children.map((c) => c.process.pid));
    const machineBefore = machineTicks();

    const t0 = performance.now();
    await queue.resume();
    const deadline = t0 + RUN_TIMEOUT_MS;
    const exited = Promise.race(
      children.map((c) =>
        c.exited.then((exit) => {
          throw new Error(
            `${c.name} exited (${exit.signal ?? `code ${exit.code}`}) during the run:\n${c.tail()}`,
          );
        }),
      ),
    );
    exited.catch(() => undefined);
    for (;;) {
      const { rows } = await sql<{ n: number }>`
        select count(*)::int as n from inbox where message_id >= ${firstId}`.execute(probe);
      ownTransactions++;
      if (rows[0]!.n >= ctx.jobs) break;
      if (performance.now() > deadline) {
        throw new Error(`workers-${processes}: ${rows[0]!.n} of ${ctx.jobs} applied in time`);
      }
      await Promise.race([sleep(POLL_MS), exited]);
    }
    const seconds = (performance.now() - t0) / 1000;

    const pgAfter = postgresTicks();
    const redisAfter = await redisCpuSeconds(target.redis);
    const workersAfter = sumTicks(children.map((c) => c.process.pid));
    const machineAfter = machineTicks();
    const rssMb = Math.max(...children.map((c) => rssMbOf(c.process.pid)));
    const pgPids = await benchPostgresPids(stats, database);

    const latenciesMs = (await queue.getJobs(['completed'], 0, REMOVE_ON_COMPLETE.count - 1))
      .filter((job) => job.processedOn && job.finishedOn)
      .map((job) => job.finishedOn! - job.processedOn!);

    // The workers' last counts reach PostgreSQL when their backends end.
    await Promise.all(children.map((c) => c.stop(15_000)));
    await waitForBackendsGone(stats, pgPids.byName('onceq-worker'));
    // This session's polls, flushed by the call (which counts as one more).
    ownTransactions += 1;
    const commitsAfter = await readCommits(stats, probe, database);

    const cores = (ticks: number | null) =>
      ticks === null ? null : round(ticks / CLOCK_TICKS / seconds);
    const pgTicks = pgPids.all.length > 0 ? ticksBetween(pgBefore, pgAfter, pgPids.all) : null;
    return {
      seconds,
      latenciesMs,
      rssMb,
      usage: {
        commits: commitsAfter - commitsBefore - ownTransactions,
        cpu: {
          postgres: cores(pgTicks),
          redis: round((redisAfter - redisBefore) / seconds),
          workers:
            workersBefore === null || workersAfter === null
              ? null
              : cores(workersAfter - workersBefore),
          machine:
            machineBefore === null || machineAfter === null
              ? null
              : cores(machineAfter - machineBefore),
        },
      },
    };
  } finally {
    await Promise.all(children.map((c) => c.destroy()));
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    await probe.destroy();
    await stats.end().catch(() => undefined);
  }
}

/**
 * `pg-commits`: PostgreSQL's own commit rate on this machine, for the `workers-*` figures to be
 * read against: `jobs` single-row INSERTs, each its own transaction, from `connections`
 * sessions at once (as many as four workers' pools hold), into a table of their own.
 */
export async function runCommitCeiling(
  ctx: WorkerBenchContext,
  redis: RedisClient,
  connections: number,
): Promise<WorkerRound> {
  const url = new URL(ctx.databaseUrl);
  url.searchParams.set('application_name', 'onceq-bench-commits');
  const pool = new pg.Pool({
    connectionString: url.toString(),
    max: connections,
    options: `-c search_path=${ctx.schema}`,
  });
  const stats = statsClient(ctx.databaseUrl);
  const probe = openProbe(ctx);
  try {
    await stats.connect();
    const database = await currentDatabase(probe);
    await sql`create table if not exists bench_commits (id bigint primary key)`.execute(probe);
    // Every connection open before the clock: the figure is commits, not connection set-up.
    const clients = await Promise.all(Array.from({ length: connections }, () => pool.connect()));
    for (const c of clients) c.release();
    const ids = Array.from({ length: ctx.jobs }, () => ctx.ids.nextId());
    const commitsBefore = await readCommits(stats, probe, database);
    const pgBefore = postgresTicks();
    const redisBefore = await redisCpuSeconds(redis);
    const machineBefore = machineTicks();
    const latenciesMs: number[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (next < ids.length) {
          const id = ids[next++]!;
          const t = performance.now();
          await pool.query('insert into bench_commits (id) values ($1)', [id]);
          latenciesMs.push(performance.now() - t);
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    const pgAfter = postgresTicks();
    const redisAfter = await redisCpuSeconds(redis);
    const machineAfter = machineTicks();
    const pgPids = await benchPostgresPids(stats, database);
    await pool.end();
    await waitForBackendsGone(stats, pgPids.byName('onceq-bench-commits'));
    const commitsAfter = await readCommits(stats, probe, database);
    const pgTicks = ticksBetween(pgBefore, pgAfter, pgPids.all);
    return {
      seconds,
      latenciesMs,
      rssMb: process.memoryUsage().rss / 2 ** 20,
      usage: {
        // Less the flush call of the second reading.
        commits: commitsAfter - commitsBefore - 1,
        cpu: {
          postgres: pgTicks === null ? null : round(pgTicks / CLOCK_TICKS / seconds),
          redis: round((redisAfter - redisBefore) / seconds),
          workers: null,
          machine:
            machineBefore === null || machineAfter === null
              ? null
              : round((machineAfter - machineBefore) / CLOCK_TICKS / seconds),
        },
      },
    };
  } finally {
    await pool.end().catch(() => undefined);
    await sql`drop table if exists bench_commits`.execute(probe).catch(() => undefined);
    await probe.destroy();
    await stats.end().catch(() => undefined);
  }
}

function workerEnv(
  ctx: WorkerBenchContext,
  target: WorkerTarget,
  metricsPort: number,
): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    NODE_ENV: 'production',
    ...target.env,
    DATABASE_URL: ctx.databaseUrl,
    ONCEQ_DB_SCHEMA: ctx.schema,
    ONCEQ_DB_POOL_SIZE: String(ctx.poolSize),
    ONCEQ_PREFIX: ctx.prefix,
    ONCEQ_JOBS: ctx.command.jobsModule,
    ONCEQ_QUEUES: BENCH_QUEUE,
    ONCEQ_CONCURRENCY: String(ctx.concurrency),
    ONCEQ_LOCK_DURATION: '30s',
    // Neither pass belongs to the delivery path measured (the in-process figures run without
    // the reconciler): a first pass at a random moment of a day never lands in a round.
    ONCEQ_RECONCILE_INTERVAL: '24h',
    ONCEQ_PRUNE_INTERVAL: '24h',
    // No line per delivery (the in-process figures log nothing either); readiness is /healthz.
    LOG_LEVEL: 'warn',
    ONCEQ_HOST: '127.0.0.1',
    ONCEQ_METRICS_PORT: String(metricsPort),
  };
}

/** Resolves once the child answers 200 on /healthz; rejects when it exits or at the bound. */
async function waitForHealth(child: Child, port: number): Promise<void> {
  const deadline = performance.now() + WORKER_START_MS;
  while (performance.now() < deadline) {
    if (!child.running()) {
      throw new Error(`${child.name} exited before it was ready:\n${child.tail()}`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      await res.body?.cancel();
      if (res.ok) return;
    } catch {
      // Not listening yet.
    }
    await sleep(50);
  }
  throw new Error(`${child.name} was not ready within ${WORKER_START_MS} ms:\n${child.tail()}`);
}

/**
 * A session on another database of the server (`postgres`), for the statistics views: its own
 * transactions do not count in the bench database's commits.
 */
function statsClient(databaseUrl: string): pg.Client {
  const url = new URL(databaseUrl);
  url.pathname = '/postgres';
  url.searchParams.set('application_name', 'onceq-bench-stats');
  return new pg.Client({ connectionString: url.toString() });
}

/**
 * One session of the bench database for the polls and the flush of their counts: a pool could
 * flush one connection and leave another's counts pending, to land in a later window.
 */
function openProbe(ctx: WorkerBenchContext): Db {
  return createDb({
    url: ctx.databaseUrl,
    schema: ctx.schema,
    poolSize: 1,
    applicationName: 'onceq-bench-probe',
  });
}

/**
 * The bench database's commit count, once `db`'s pending counts are flushed: the flush call is a
 * transaction of the bench database, flushed with them (so a second reading counts the first's
 * call, not its own); the read runs on the statistics session.
 */
async function readCommits(stats: pg.Client, db: Db, database: string): Promise<number> {
  await sql`select pg_stat_force_next_flush()`.execute(db);
  // A backend flushes when it goes idle after the transaction; give it that moment.
  await sleep(20);
  const { rows } = await stats.query<{ n: string }>(
    'select xact_commit::text as n from pg_stat_database where datname = $1',
    [database],
  );
  if (rows.length === 0) throw new Error(`bench: no database ${database} in pg_stat_database`);
  return Number(rows[0]!.n);
}

async function currentDatabase(db: Db): Promise<string> {
  const { rows } = await sql<{ name: string }>`select current_database() as name`.execute(db);
  return rows[0]!.name;
}

/** The backends of the bench database and the server's own processes (no database). */
async function benchPostgresPids(stats: pg.Client, database: string) {
  const { rows } = await stats.query<{ pid: number; name: string }>(
    `select pid, application_name as name from pg_stat_activity
      where datname is null or datname = $1`,
    [database],
  );
  return {
    all: rows.map((r) => r.pid),
    byName: (name: string) => rows.filter((r) => r.name === name).map((r) => r.pid),
  };
}

/** Waits (at most 5 s) until the backends `pids` have ended, so their counts are flushed. */
async function waitForBackendsGone(stats: pg.Client, pids: number[]): Promise<void> {
  const deadline = performance.now() + 5_000;
  while (performance.now() < deadline) {
    const { rows } = await stats.query<{ n: number }>(
      'select count(*)::int as n from pg_stat_activity where pid = any($1::int[])',
      [pids],
    );
    if (rows[0]!.n === 0) return;
    await sleep(50);
  }
}

/** USER_HZ: the unit of /proc's CPU times on Linux. */
const CLOCK_TICKS = 100;

/** utime + stime of a process, in clock ticks; undefined when it is gone or /proc is not there. */
function processTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

function sumTicks(pids: (number | undefined)[]): number | null {
  let sum = 0;
  for (const pid of pids) {
    const ticks = pid === undefined ? undefined : processTicks(pid);
    if (ticks === undefined) return null;
    sum += ticks;
  }
  return sum;
}

/** CPU ticks of every process named postgres, by pid; null without /proc. */
function postgresTicks(): Map<number, number> | null {
  if (!existsSync('/proc/stat')) return null;
  const out = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/comm`, 'utf8').trim() !== 'postgres') continue;
    } catch {
      continue;
    }
    const ticks = processTicks(Number(name));
    if (ticks !== undefined) out.set(Number(name), ticks);
  }
  return out;
}

/** Busy ticks of the whole machine (all but idle and iowait), or null without /proc. */
function machineTicks(): number | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const values = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    const total = values.slice(0, 8).reduce((a, b) => a + b, 0);
    return total - values[3]! - values[4]!;
  } catch {
    return null;
  }
}

function rssMbOf(pid: number | undefined): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/** used_cpu_sys + used_cpu_user, summed over every server of the target (masters and replicas). */
async function redisCpuSeconds(redis: RedisClient): Promise<number> {
  const nodes: Redis[] = isCluster(redis) ? redis.nodes('all') : [redis];
  let sum = 0;
  for (const node of nodes) {
    const info = await node.info('cpu');
    sum += Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1] ?? 0);
    sum += Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1] ?? 0);
  }
  return sum;
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}

/**
 * CPU ticks the processes `pids` used between two readings of {@link postgresTicks}; `null`
 * without a first reading. A process gone by the second reading is left out.
 */
function ticksBetween(
  before: Map<number, number> | undefined | null,
  after: Map<number, number> | undefined | null,
  pids: readonly number[],
): number | null {
  if (!before) return null;
  return pids.reduce((sum, pid) => {
    const now = after?.get(pid);
    return now === undefined ? sum : sum + now - (before.get(pid) ?? 0);
  }, 0);
}
