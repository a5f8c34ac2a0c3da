/**
 * `onceq bench` / `npm run bench`: throughput of onceq against baselines measured in the same
 * run on the same machine (DESIGN.md section 8). Ratios are what to compare across machines;
 * absolute figures move with the machine's load. Each figure is the median of several runs.
 *
 *   bullmq-noop         BullMQ, a processor that does nothing
 *   bullmq-insert       at-least-once: BullMQ plus one plain INSERT per job
 *   graphile-batched    at-least-once on PostgreSQL alone: graphile-worker 0.17.3 with its
 *                       batching on (a local queue of 500, completions and failures batched),
 *                       the same INSERT per job, its own schema in the bench database
 *   onceq-insert        onceq exactly-once, the same INSERT as the handler
 *   onceq-insert-dup30  the same with 30% of deliveries duplicates of earlier messages
 *   onceq-dup-only      every delivery a duplicate: N messages applied first (not timed), then
 *                       N new jobs carrying the same envelopes, as a second enqueue would
 *   onceq-transfer      onceq running ledger.transfer between 1,000 accounts
 *   api-bare            HTTP: a bare Fastify route that only calls queue.add (requests/s)
 *   api-stores          HTTP: a bare route doing only the writes every enqueue needs: token
 *                       accepted in Redis, acceptance committed to PostgreSQL, queue.add
 *   api-jobs            HTTP: POST /v1/jobs through the producer API, a fresh token each
 *                       (requests/s; `concurrency` is connections, `jobs` requests but at
 *                       least 30,000; autocannon runs in a child process)
 *   dlq-replay          `onceq dlq replay --all` of 20,000 dead letters back to their queue
 *                       (letters/s; the seeding is not timed, no worker runs)
 *   workers-N           N (1, 2, 4) real `onceq worker` processes on the single Redis, the
 *                       onceq-insert handler, the clock from resuming a paused queue (start-up
 *                       excluded) to the last inbox row; with PostgreSQL's commits/s and the CPU
 *                       of PostgreSQL, Redis, the workers and the machine (worker-processes.ts)
 *   cluster-workers-N   the same on a 3+3 Redis Cluster the bench starts on loopback and stops
 *   pg-commits          PostgreSQL's own commit rate: one-row INSERTs, each committed, from as
 *                       many sessions as four workers' pools hold: the ceiling to read them by
 *
 * `--cases workers` chooses the last three families (a word chooses a figure that it names, or
 * one of whose dash-separated parts it is, or of whose family it is: `workers` takes
 * pg-commits too); `--only` names figures exactly. The workers figures draw their own chart,
 * jobs/s against worker processes, one line per Redis (`--workers-chart`).
 *
 * `--group-variants off,on:2:50,savepoints:2:50` adds, per variant and onceq figure chosen, a
 * figure such as `onceq-insert[savepoints:2:50]` run with that group commit (mode:maxGroups:
 * maxSize); the plain onceq figures run with the worker's defaults. `--sweep` adds bullmq-insert
 * and onceq-insert at each of SWEEP_CONCURRENCY (`bullmq-insert@c10`, …) and draws them, jobs/s
 * against concurrency, as an SVG chart. Every figure, variant and sweep point runs in the same
 * interleaved rounds.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { cpus } from 'node:os';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Queue, type Job, type JobsOptions } from 'bullmq';
import { sql } from 'kysely';
import {
  Logger as GraphileLogger,
  makeWorkerUtils,
  run as runGraphileWorker,
  type WorkerEvents,
} from 'graphile-worker';
import { loadConfig } from '../../src/config.js';
import { createDb, checkDatabase, type Db } from '../../src/db/create-db.js';
import { ensureDatabase } from '../../src/db/migrate.js';
import { migrateWithLedger } from '../../src/jobs/examples/ledger/migrations.js';
import {
  createRedis,
  createRedisCluster,
  checkRedis,
  closeRedis,
} from '../../src/redis/connection.js';
import { JobRegistry } from '../../src/jobs/registry.js';
import { ledgerJobs } from '../../src/jobs/examples/ledger/index.js';
import { addInChunks, BENCH_QUEUE, benchInsert, REMOVE_ON_COMPLETE } from './bench-jobs.js';
import { startWorker } from '../../src/worker/worker.js';
import type { GroupCommitOptions } from '../../src/worker/commit-groups.js';
import { jobIdFor, type MessageEnvelope } from '../../src/core/message.js';
import { SnowflakeGenerator } from '../../src/ids/snowflake-generator.js';
import { generateToken } from '../../src/core/token.js';
import { ErrorCode, OnceqError } from '../../src/core/errors.js';
import type { Cluster, Redis } from 'ioredis';
import { runApiRoute, runBareRoute, runStoresRoute, type ApiBenchOptions } from './api-bench.js';
import { replayDeadLetters } from '../../src/worker/dead-letter-replay.js';
import { deletePrefix } from '../support/redis.js';
import { renderLineChart } from './charts.js';
import {
  runCommitCeiling,
  runWorkerProcesses,
  workerCommand,
  WORKER_PROCESSES,
  type CpuCores,
  type WindowUsage,
  type WorkerBenchContext,
  type WorkerCommand,
  type WorkerTarget,
} from './worker-processes.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { createRedisBackend } from '../../src/queues/redis-backend.js';
import { DEFAULT_REDIS_URL } from '../../src/core/defaults.js';
import { createPostgresBackend } from '../../src/queues/postgres-backend.js';
import type { Backend, BackendKind } from '../../src/queues/backend.js';

/** Options of {@link runBench} (strings: they come from the command line). */
export interface BenchOptions {
  jobs?: string;
  concurrency?: string;
  runs?: string;
  json?: string;
  only?: string;
  /** `--group-variants`: comma-separated group-commit variants, see {@link parseGroupVariants}. */
  groupVariants?: string;
  /** `--sweep`: bullmq-insert and onceq-insert at each of {@link SWEEP_CONCURRENCY}. */
  sweep?: boolean;
  /** `--chart`: where the sweep's SVG goes. @defaultValue {@link DEFAULT_CHART} */
  chart?: string;
  /**
   * `--cases`: comma-separated words; a figure runs when a word is its name, one of the
   * dash-separated parts of its name, or its family (`workers`). Adds to `--only`.
   */
  cases?: string;
  /** `--workers-chart`: where the workers figures' SVG goes. @defaultValue {@link DEFAULT_WORKERS_CHART} */
  workersChart?: string;
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
  /** A group-commit variant's spec (`on:2:50`), on `--group-variants` figures only. */
  groupCommit?: string;
  /** On `--sweep` figures: the figure measured at this figure's concurrency. */
  sweepOf?: string;
  /** On the workers figures: `onceq worker` processes (`concurrency` is per process). */
  processes?: number;
  /** On the workers figures: the single Redis or the cluster. */
  redis?: WorkerTarget['kind'];
  /** On the workers figures and pg-commits: PostgreSQL's commits per second (median). */
  commitsPerSecond?: number;
  /** Messages applied per commit: jobs/s over commits/s. */
  jobsPerCommit?: number;
  /** CPU over the timed window, in cores, medians of the rounds (null: /proc not there). */
  cpuCores?: CpuCores;
}

/** Worker concurrencies of `--sweep`. */
export const SWEEP_CONCURRENCY = [1, 10, 50, 200] as const;
/** The figures `--sweep` measures at each concurrency. */
const SWEEP_FIGURES = ['bullmq-insert', 'onceq-insert'] as const;
/** Where `--sweep` writes its chart unless `--chart` says otherwise. */
export const DEFAULT_CHART = 'docs/bench/concurrency.svg';
/** Where the workers figures' chart goes unless `--workers-chart` says otherwise. */
export const DEFAULT_WORKERS_CHART = 'docs/bench/workers.svg';

/**
 * Whether a figure is chosen by `--only` (exact names) and `--cases` (a name, a dash-separated
 * part of the name, or the family); everything when neither is given.
 */
export function isChosen(
  name: string,
  family: string | undefined,
  only: readonly string[] | undefined,
  cases: readonly string[] | undefined,
): boolean {
  if (!only && !cases) return true;
  if (only?.includes(name)) return true;
  return (cases ?? []).some((w) => w === name || w === family || name.split('-').includes(w));
}

/** A group-commit setting to measure, from `--group-variants`. */
export interface GroupVariant {
  /** As written: `off`, `on:2:50`, `savepoints:2:50`. */
  spec: string;
  groupCommit: GroupCommitOptions | false;
}

/**
 * Parses `--group-variants`: comma-separated `off`, or `on` or `savepoints` optionally followed
 * by `:maxGroups` and `:maxSize` (the worker's defaults where left out). `savepoints` is group
 * commit with each member in a savepoint.
 */
export function parseGroupVariants(text: string | undefined): GroupVariant[] {
  const specs = (text ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return specs.map((spec) => {
    const [mode, groups, size, ...rest] = spec.split(':');
    const bad = () =>
      new OnceqError(
        ErrorCode.ConfigInvalid,
        `--group-variants: ${spec} is not off, on[:maxGroups[:maxSize]] or ` +
          'savepoints[:maxGroups[:maxSize]]',
      );
    if (rest.length > 0) throw bad();
    if (mode === 'off') {
      if (groups !== undefined) throw bad();
      return { spec, groupCommit: false };
    }
    if (mode !== 'on' && mode !== 'savepoints') throw bad();
    const groupCommit: GroupCommitOptions = { savepoints: mode === 'savepoints' };
    if (groups !== undefined) groupCommit.maxGroups = positive(groups, `--group-variants ${spec}`);
    if (size !== undefined) groupCommit.maxSize = positive(size, `--group-variants ${spec}`);
    return { spec, groupCommit };
  });
}

const transferOnBench = { ...ledgerJobs[2], queue: BENCH_QUEUE };

/** The onceq figures, each of which `--group-variants` repeats per variant. */
type OnceqWorkload = 'insert' | 'insert-dup30' | 'transfer' | 'dup-only';
const ONCEQ_WORKLOADS: OnceqWorkload[] = ['insert', 'insert-dup30', 'dup-only', 'transfer'];

/** What every figure's run needs. */
interface BenchContext {
  db: Db;
  redis: Redis;
  prefix: string;
  /** The queues of a figure: Redis, or PostgreSQL alone (the `-pg` figures). */
  backends: Record<BackendKind, Backend>;
  registry: JobRegistry;
  ids: SnowflakeGenerator;
  accounts: string[];
  jobs: number;
}

/**
 * Runs the bench. `env` gives REDIS_URL and DATABASE_URL (and the pool size) as the CLI's
 * configuration does; tests hand it their own.
 */
export async function runBench(
  options: BenchOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const jobs = positive(options.jobs ?? '5000', '--jobs');
  const concurrency = positive(options.concurrency ?? '50', '--concurrency');
  const runs = positive(options.runs ?? '3', '--runs');
  const list = (text: string | undefined) =>
    text
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const only = list(options.only);
  const cases = list(options.cases);
  const chosenByName = (name: string, family?: string) => isChosen(name, family, only, cases);
  const variants = parseGroupVariants(options.groupVariants);
  const chartFile = options.sweep ? (options.chart ?? DEFAULT_CHART) : undefined;
  const config = loadConfig(env);
  await ensureDatabase(config.databaseUrl);
  const suffix = randomBytes(4).toString('hex');
  const schema = `bench_${suffix}`;
  // graphile-worker's own tables, functions and types, in a schema of their own next to the
  // bench's, dropped afterwards like it.
  const graphileSchema = `bench_gw_${suffix}`;
  const prefix = `onceq-bench-${suffix}`;
  // The PostgreSQL-only figures' BullMQ tables.
  const queueSchema = `bench_bq_${suffix}`;
  const db = createDb({
    url: config.databaseUrl,
    schema,
    poolSize: config.poolSize,
    applicationName: 'onceq-bench',
  });
  const redis = createRedis({
    url: config.redisUrl ?? DEFAULT_REDIS_URL,
    connectionName: 'onceq-bench',
  });
  const figures: Figure[] = [];
  let graphileInstalled = false;
  // The workers figures' Redis Cluster and its client, started when a cluster figure is chosen.
  let cluster: RedisCluster | undefined;
  let clusterClient: Cluster | undefined;
  let workers: WorkerCommand | undefined;
  try {
    await checkRedis(redis, config.redisUrl ?? DEFAULT_REDIS_URL);
    await checkDatabase(db, config.databaseUrl);
    await migrateWithLedger(db, schema);
    await sql`create table bench_events (id bigint primary key, n integer not null)`.execute(db);
    const ids = new SnowflakeGenerator({ workerId: 1 });
    const registry = new JobRegistry([benchInsert, transferOnBench as (typeof ledgerJobs)[2]]);
    const accounts = await openBenchAccounts(db, ids, 1_000);
    const backends: Record<BackendKind, Backend> = {
      redis: createRedisBackend({ redis, prefix }),
      // BullMQ's tables in a schema of their own, dropped afterwards like the bench's.
      postgres: createPostgresBackend({
        connection: config.databaseUrl,
        prefix: queueSchema,
        workerPoolSize: config.poolSize,
      }),
    };
    const bench: BenchContext = { db, redis, prefix, backends, registry, ids, accounts, jobs };
    const graphile: GraphileTarget = {
      connectionString: config.databaseUrl,
      schema: graphileSchema,
      installed: false,
    };

    interface Scenario {
      name: string;
      /** For variants, the figure this one varies; for sweep points, the figure swept. */
      base?: string;
      groupCommit?: string;
      sweep?: boolean;
      /** `--cases` chooses a figure by its family too. */
      family?: string;
      processes?: number;
      redis?: WorkerTarget['kind'];
      concurrency: number;
      run: () => Promise<Measured>;
    }
    const workerTargets: Partial<Record<WorkerTarget['kind'], WorkerTarget>> = {};
    const workerContext = (): WorkerBenchContext => ({
      db,
      ids,
      prefix,
      schema,
      databaseUrl: config.databaseUrl,
      poolSize: config.poolSize,
      concurrency,
      jobs,
      command: workers!,
    });
    // As many sessions as the most workers hold in their pools.
    const ceilingConnections = Math.max(...WORKER_PROCESSES) * config.poolSize;
    const insertProcessor = async (job: Job) => {
      await db
        .insertInto('bench_events' as never)
        .values({ id: job.data.id, n: job.data.n } as never)
        .execute();
    };
    const onceq = (workload: OnceqWorkload, c: number, gc?: GroupCommitOptions | false) => () =>
      runOnceq(bench, workload, c, gc);
    const scenarios: Scenario[] = [
      {
        name: 'bullmq-noop',
        concurrency,
        run: () => runBaseline(bench, concurrency, async () => undefined),
      },
      {
        name: 'bullmq-insert',
        concurrency,
        run: () => runBaseline(bench, concurrency, insertProcessor),
      },
      {
        // At-least-once on BullMQ's PostgreSQL backend: the baseline of PostgreSQL-only mode.
        name: 'bullmq-pg-insert',
        concurrency,
        run: () => runBaseline(bench, concurrency, insertProcessor, 'postgres'),
      },
      {
        name: 'onceq-pg-insert',
        concurrency,
        run: () => runOnceq(bench, 'insert', concurrency, undefined, 'postgres'),
      },
      {
        name: 'graphile-batched',
        concurrency,
        run: async () => {
          graphileInstalled = true;
          return runGraphile(bench, graphile, concurrency);
        },
      },
      ...ONCEQ_WORKLOADS.map((w) => ({
        name: `onceq-${w}`,
        concurrency,
        run: onceq(w, concurrency),
      })),
      { name: 'api-bare', concurrency, run: () => runBareRoute(apiOptions()) },
      { name: 'api-stores', concurrency, run: () => runStoresRoute(apiOptions()) },
      { name: 'api-jobs', concurrency, run: () => runApiRoute(apiOptions()) },
      {
        name: 'dlq-replay',
        concurrency,
        run: () => runDlqReplay(db, redis, prefix, ids, DLQ_REPLAY_LETTERS),
      },
      // The single Redis and the cluster at the same N run next to each other in every round.
      ...WORKER_PROCESSES.flatMap((n) =>
        (['single', 'cluster'] as const).map((kind) => ({
          name: kind === 'single' ? `workers-${n}` : `cluster-workers-${n}`,
          family: 'workers',
          processes: n,
          redis: kind,
          concurrency,
          run: () => runWorkerProcesses(workerContext(), workerTargets[kind]!, n),
        })),
      ),
      {
        name: 'pg-commits',
        family: 'workers',
        concurrency: ceilingConnections,
        run: () => runCommitCeiling(workerContext(), redis, ceilingConnections),
      },
    ];
    function apiOptions(): ApiBenchOptions {
      return {
        db,
        redis,
        prefix,
        backend: createRedisBackend({ redis, prefix }),
        registry,
        ids,
        // At least API_MIN_REQUESTS: 5,000 requests last a quarter of a second on the bare route,
        // which then measures the JIT warming up rather than the route.
        requests: Math.max(jobs, API_MIN_REQUESTS),
        connections: concurrency,
        job: { name: benchInsert.name, data: { n: 1 }, queue: BENCH_QUEUE },
      };
    }
    // Variants and sweep points are chosen with the figure they vary: `--only onceq-insert`
    // keeps `onceq-insert[off]`; a variant can also be named on its own. Each figure's variants
    // run right after it in every round, so what they are compared with ran moments before.
    const chosen: Scenario[] = [];
    for (const sc of scenarios) {
      if (chosenByName(sc.name, sc.family)) chosen.push(sc);
      const w = ONCEQ_WORKLOADS.find((x) => sc.name === `onceq-${x}`);
      if (w === undefined) continue;
      for (const v of variants) {
        const name = `${sc.name}[${v.spec}]`;
        if (!chosenByName(sc.name) && !chosenByName(name)) continue;
        chosen.push({
          name,
          base: sc.name,
          groupCommit: v.spec,
          concurrency,
          run: onceq(w, concurrency, v.groupCommit),
        });
      }
    }
    if (options.sweep) {
      const sweepRun = {
        'bullmq-insert': (c: number) => () => runBaseline(bench, c, insertProcessor),
        'onceq-insert': (c: number) => onceq('insert', c),
      };
      for (const c of SWEEP_CONCURRENCY) {
        for (const base of SWEEP_FIGURES) {
          chosen.push({
            name: `${base}@c${c}`,
            base,
            sweep: true,
            concurrency: c,
            run: sweepRun[base](c),
          });
        }
      }
    }
    if (chosen.length === 0) {
      throw new OnceqError(
        ErrorCode.ConfigInvalid,
        `--only/--cases chose no figure (figures: ${scenarios.map((sc) => sc.name).join(', ')})`,
      );
    }
    if (chosen.some((sc) => sc.family === 'workers')) {
      workers = workerCommand();
      process.stderr.write(
        `workers: ${workers.kind === 'compiled' ? 'bin/onceq.js (compiled)' : `tools/cli.ts through tsx: ${workers.why}`}\n`,
      );
      workerTargets.single = {
        kind: 'single',
        redis,
        env: { REDIS_URL: config.redisUrl ?? DEFAULT_REDIS_URL },
      };
    }
    if (chosen.some((sc) => sc.redis === 'cluster')) {
      cluster = await startRedisCluster();
      clusterClient = createRedisCluster({
        nodes: [...cluster.nodes],
        connectionName: 'onceq-bench',
      });
      await clusterClient.connect();
      workerTargets.cluster = {
        kind: 'cluster',
        redis: clusterClient,
        env: { REDIS_CLUSTER_NODES: cluster.nodesSpec },
      };
      process.stderr.write(`cluster: ${cluster.nodesSpec} (3 masters, 3 replicas)\n`);
    }
    // Rounds interleave the figures (A B C, A B C, …) so a burst of load from elsewhere on a
    // shared machine lands on every figure alike, and medians of the rounds are reported.
    const measured = new Map<string, Measured[]>(chosen.map((sc) => [sc.name, []]));
    const started = performance.now();
    for (let r = 0; r < runs; r++) {
      for (const scenario of chosen) {
        await deletePrefix(redis, prefix);
        if (clusterClient) await deletePrefix(clusterClient, prefix);
        const m = await scenario.run();
        measured.get(scenario.name)!.push(m);
        process.stderr.write(
          `round ${r + 1}/${runs} ${scenario.name}: ${Math.round((m.items ?? jobs) / m.seconds)} jobs/s\n`,
        );
      }
    }
    process.stderr.write(
      `${chosen.length} figures × ${runs} rounds in ${Math.round((performance.now() - started) / 1000)} s\n`,
    );
    for (const scenario of chosen) {
      const figure = summarise(
        scenario.name,
        scenario.concurrency,
        jobs,
        measured.get(scenario.name)!,
      );
      if (scenario.groupCommit !== undefined) figure.groupCommit = scenario.groupCommit;
      if (scenario.sweep) figure.sweepOf = scenario.base;
      if (scenario.processes !== undefined) {
        figure.processes = scenario.processes;
        figure.redis = scenario.redis;
      }
      addUsage(figure, measured.get(scenario.name)!);
      figures.push(figure);
      process.stdout.write(`${JSON.stringify({ bench: figure })}\n`);
    }
  } finally {
    await deletePrefix(redis, prefix).catch(() => undefined);
    if (clusterClient) {
      await deletePrefix(clusterClient, prefix).catch(() => undefined);
      await closeRedis(clusterClient);
    }
    await cluster?.stop();
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db).catch(() => undefined);
    await sql`drop schema if exists ${sql.id(queueSchema)} cascade`
      .execute(db)
      .catch(() => undefined);
    if (graphileInstalled) {
      await sql`drop schema if exists ${sql.id(graphileSchema)} cascade`
        .execute(db)
        .catch(() => undefined);
    }
    await db.destroy();
    await closeRedis(redis);
  }
  printTable(figures);
  if (chartFile) {
    mkdirSync(dirname(chartFile), { recursive: true });
    writeFileSync(chartFile, await sweepChart(figures, jobs));
    process.stdout.write(`chart ${chartFile}\n`);
  }
  const workersChartFile = figures.some((f) => f.processes !== undefined)
    ? (options.workersChart ?? DEFAULT_WORKERS_CHART)
    : undefined;
  if (workersChartFile) {
    mkdirSync(dirname(workersChartFile), { recursive: true });
    writeFileSync(workersChartFile, await workersChart(figures, jobs, concurrency));
    process.stdout.write(`chart ${workersChartFile}\n`);
  }
  if (options.json) {
    const report: Record<string, unknown> = { figures, ratios: ratios(figures) };
    if (workers) {
      report.workers = {
        processes: [...WORKER_PROCESSES],
        command: workers.kind,
        ...(workersChartFile ? { chart: workersChartFile } : {}),
      };
    }
    if (variants.length > 0) report.groupVariants = variants.map((v) => v.spec);
    if (chartFile) report.sweep = { concurrency: [...SWEEP_CONCURRENCY], chart: chartFile };
    writeFileSync(options.json, `${JSON.stringify(report, null, 2)}\n`);
  }
  return 0;
}

/** The sweep's chart: jobs/s against worker concurrency, one line per swept figure. */
function sweepChart(figures: Figure[], jobs: number): Promise<string> {
  return renderLineChart({
    title: `Throughput against worker concurrency (${jobs} jobs per run, median of rounds)`,
    x: {
      field: 'concurrency',
      title: 'worker concurrency',
      type: 'quantitative',
      scale: { type: 'log' },
    },
    y: { field: 'jobsPerSecond', title: 'jobs/s', type: 'quantitative' },
    series: 'figure',
    values: figures
      .filter((f) => f.sweepOf)
      .map((f) => ({
        figure: f.sweepOf,
        concurrency: f.concurrency,
        jobsPerSecond: f.jobsPerSecond,
      })),
  });
}

/**
 * The workers figures' chart: jobs/s against worker processes, one line for the single Redis
 * and one for the cluster.
 */
function workersChart(figures: Figure[], jobs: number, concurrency: number): Promise<string> {
  const series = { single: 'single Redis', cluster: 'Redis Cluster (3+3)' };
  return renderLineChart({
    title: `Throughput against onceq worker processes (${jobs} jobs per run, concurrency ${concurrency} each, median of rounds)`,
    x: { field: 'processes', title: 'onceq worker processes', type: 'ordinal' },
    y: { field: 'jobsPerSecond', title: 'jobs/s', type: 'quantitative' },
    series: 'redis',
    values: figures
      .filter((f) => f.processes !== undefined)
      .map((f) => ({
        redis: series[f.redis!],
        processes: f.processes,
        jobsPerSecond: f.jobsPerSecond,
      })),
  });
}

/** Medians of the rounds' commit counts and CPU, on the figures that measured them. */
function addUsage(figure: Figure, runs: Measured[]): void {
  const usages = runs.flatMap((r) => (r.usage ? [{ ...r.usage, seconds: r.seconds }] : []));
  if (usages.length === 0) return;
  figure.commitsPerSecond = Math.round(median(usages.map((u) => u.commits / u.seconds)));
  figure.jobsPerCommit = round(figure.jobsPerSecond / Math.max(1, figure.commitsPerSecond));
  const cores = (key: keyof CpuCores) => {
    const values = usages.map((u) => u.cpu[key]);
    return values.some((v) => v === null) ? null : round(median(values as number[]));
  };
  figure.cpuCores = {
    postgres: cores('postgres'),
    redis: cores('redis')!,
    workers: cores('workers'),
    machine: cores('machine'),
  };
}

interface Measured {
  seconds: number;
  /** Items the run handled, when not `--jobs` (dlq-replay, the API figures). */
  items?: number;
  latenciesMs: number[];
  rssMb: number;
  /** PostgreSQL's commits and the CPU over the window (the workers figures and pg-commits). */
  usage?: WindowUsage;
}

async function runBaseline(
  { ids, backends, jobs }: BenchContext,
  concurrency: number,
  processor: (job: Job) => Promise<void>,
  kind: BackendKind = 'redis',
): Promise<Measured> {
  const backend = backends[kind];
  const queue = backend.newQueue(BENCH_QUEUE);
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
  const worker = backend.newWorker(
    BENCH_QUEUE,
    async (job) => {
      const t0 = performance.now();
      await processor(job);
      latencies.push(performance.now() - t0);
    },
    // BullMQ's defaults, as a plain BullMQ user gets them.
    { concurrency, lockDuration: 30_000, stalledInterval: 30_000, maxStalledCount: 1 },
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

/** Where graphile-batched keeps its queue. */
interface GraphileTarget {
  connectionString: string;
  schema: string;
  /** Its schema was migrated by an earlier round. */
  installed: boolean;
}

/** graphile-worker's log, its errors and warnings only (it announces every start at info). */
const graphileLogger = new GraphileLogger(() => (level, message) => {
  if (level === 'error' || level === 'warning')
    process.stderr.write(`graphile-worker: ${message}\n`);
});

/**
 * graphile-batched: graphile-worker with its batching on (a local queue of 500 jobs, completions
 * and failures batched with no delay), the same INSERT per job as bullmq-insert (ON CONFLICT DO
 * NOTHING, as an at-least-once handler must be written), the jobs added in bulk before the clock
 * starts. The clock runs from starting the runner until every job is completed in the database
 * (its row deleted), not only handed to the batch that completes it. The latency is from the
 * handler's start to graphile's `job:complete` event (the completion queued for its batch).
 */
async function runGraphile(
  { db, ids, jobs }: BenchContext,
  target: GraphileTarget,
  concurrency: number,
): Promise<Measured> {
  const shared = {
    connectionString: target.connectionString,
    schema: target.schema,
    logger: graphileLogger,
  };
  const utils = await makeWorkerUtils(shared);
  try {
    if (!target.installed) {
      await utils.migrate();
      target.installed = true;
    }
    const specs = Array.from({ length: jobs }, (_, n) => ({
      identifier: 'bench',
      payload: { id: ids.nextId(), n },
    }));
    for (let i = 0; i < specs.length; i += 1000) await utils.addJobs(specs.slice(i, i + 1000));
  } finally {
    await utils.release();
  }
  const latencies: number[] = [];
  const startedAt = new Map<string, number>();
  let completed = 0;
  let allCompleted!: () => void;
  let failed!: (err: Error) => void;
  const handled = new Promise<void>((res, rej) => {
    allCompleted = res;
    failed = rej;
  });
  const events: WorkerEvents = new EventEmitter();
  events.on('job:complete', ({ job, error }) => {
    if (error) {
      failed(new Error(`graphile-batched job ${job.id} failed: ${String(error)}`));
      return;
    }
    const t = startedAt.get(job.id);
    startedAt.delete(job.id);
    if (t !== undefined) latencies.push(performance.now() - t);
    if (++completed === jobs) allCompleted();
  });
  const jobsTable = sql.id(target.schema, '_private_jobs');
  const t0 = performance.now();
  const runner = await runGraphileWorker({
    ...shared,
    concurrency,
    noHandleSignals: true,
    events,
    taskList: {
      bench: async (payload, helpers) => {
        startedAt.set(helpers.job.id, performance.now());
        const { id, n } = payload as { id: string; n: number };
        await sql`insert into bench_events (id, n) values (${id}, ${n}) on conflict (id) do nothing`.execute(
          db,
        );
      },
    },
    preset: {
      worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 },
    },
  });
  let seconds: number;
  try {
    await handled;
    // The last batch of completions may still be on its way: done when the table is empty.
    while (
      (await sql<{ left: number }>`select count(*)::int as left from ${jobsTable}`.execute(db))
        .rows[0]!.left > 0
    ) {
      await new Promise((r) => setTimeout(r, 2));
    }
    seconds = (performance.now() - t0) / 1000;
  } finally {
    await runner.stop();
    await runner.promise;
  }
  return { seconds, latenciesMs: latencies, rssMb: process.memoryUsage().rss / 2 ** 20 };
}

/**
 * An onceq figure: `deliveries` jobs of the workload through a real worker. `groupCommit`
 * undefined is the worker's default.
 */
async function runOnceq(
  bench: BenchContext,
  workload: OnceqWorkload,
  concurrency: number,
  groupCommit: GroupCommitOptions | false | undefined,
  kind: BackendKind = 'redis',
): Promise<Measured> {
  const { ids, accounts, jobs: deliveries } = bench;
  const name = nameOf(workload === 'transfer' ? 'transfer' : 'insert');
  const duplicateShare = workload === 'insert-dup30' ? 0.3 : 0;
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
        name,
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
      workload === 'transfer'
        ? {
            fromId: accounts[n % accounts.length]!,
            toId: accounts[(n * 7 + 1) % accounts.length]!,
            amount: 1,
          }
        : { n };
    const envelope = { messageId, token: generateToken(), data };
    sent.push(envelope);
    bulk.push({
      name,
      data: envelope,
      opts: { jobId: jobIdFor(messageId), removeOnComplete: REMOVE_ON_COMPLETE },
    });
  }
  if (workload !== 'dup-only') return deliver(bench, bulk, concurrency, groupCommit, kind);
  // dup-only: the messages are applied first, not timed; then each arrives again in a job of
  // its own (a new job id, the same envelope), as a second enqueue or a replay would add it.
  await deliver(bench, bulk, concurrency, groupCommit, kind);
  const duplicates = sent.map((envelope, n) => ({
    name,
    data: envelope,
    opts: {
      jobId: `again-${n}-${jobIdFor(envelope.messageId)}`,
      removeOnComplete: REMOVE_ON_COMPLETE,
    },
  }));
  return deliver(bench, duplicates, concurrency, groupCommit, kind, 'applied-before');
}

/** Adds `bulk`, then times a worker through all of it. */
async function deliver(
  { db, backends, registry }: BenchContext,
  bulk: { name: string; data: MessageEnvelope; opts: JobsOptions }[],
  concurrency: number,
  groupCommit: GroupCommitOptions | false | undefined,
  kind: BackendKind,
  expect?: 'applied-before',
): Promise<Measured> {
  const backend = backends[kind];
  const queue = backend.newQueue(BENCH_QUEUE);
  await addInChunks(queue, bulk);
  const latencies: number[] = [];
  const done = completion(bulk.length);
  let busy = 0;
  let applied = 0;
  const worker = await startWorker({
    db,
    backend,
    registry,
    queues: [BENCH_QUEUE],
    concurrency,
    lockDurationMs: 30_000,
    // No reconciler: the API figures leave accepted messages whose jobs the bench removes, and a
    // pass (at a random moment in the worker's first minute) would add them back to this queue,
    // where they would be counted as this figure's deliveries and slow it down. The reconciler is
    // a safety net that runs once a minute, not part of the delivery path measured here.
    reconciler: false,
    ...(groupCommit === undefined ? {} : { groupCommit }),
    onOutcome: (outcome) => {
      if (outcome === 'busy') busy++;
      if (outcome === 'applied') applied++;
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
  // How the run grouped (groups, members grouped, regrouped, run alone): what a variant changed.
  process.stderr.write(`  groups ${JSON.stringify(worker.groupCommitStats() ?? 'off')}\n`);
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  // A duplicate-only run that applied anything measured something else.
  if (expect === 'applied-before' && applied > 0) {
    throw new Error(`onceq-dup-only applied ${applied} of ${bulk.length} duplicates`);
  }
  return { seconds, latenciesMs: latencies, rssMb: process.memoryUsage().rss / 2 ** 20 };
}

/** Fewest requests an API figure sends per round, whatever `--jobs` says. */
const API_MIN_REQUESTS = 30_000;

/** Dead letters the dlq-replay figure replays (the issue's yardstick). */
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
  const summary = await replayDeadLetters({ db, backend: createRedisBackend({ redis, prefix }) });
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
  const p99 = new Map(figures.map((f) => [f.name, f.p99Ms]));
  const out: Record<string, number> = {};
  const ratio = (a: string, b: string) => {
    const x = by.get(a);
    const y = by.get(b);
    if (x && y) out[`${a} / ${b}`] = round(x / y);
  };
  for (const name of ['onceq-insert', 'onceq-insert-dup30', 'onceq-transfer']) {
    ratio(name, 'bullmq-insert');
  }
  ratio('api-jobs', 'api-bare');
  ratio('api-stores', 'api-bare');
  ratio('api-jobs', 'api-stores');
  // Added after the original ratios, whose names and order stay as they were.
  ratio('onceq-insert', 'graphile-batched');
  ratio('onceq-dup-only', 'onceq-insert');
  ratio('onceq-dup-only', 'bullmq-noop');
  // PostgreSQL-only mode against at-least-once BullMQ on the same backend, and against Redis.
  ratio('onceq-pg-insert', 'bullmq-pg-insert');
  ratio('onceq-pg-insert', 'onceq-insert');
  ratio('bullmq-pg-insert', 'bullmq-insert');
  const dupP99 = p99.get('onceq-insert-dup30');
  const insertP99 = p99.get('onceq-insert');
  if (dupP99 && insertP99)
    out['onceq-insert-dup30 p99 / onceq-insert p99'] = round(dupP99 / insertP99);
  for (const f of figures) {
    if (f.groupCommit !== undefined) ratio(f.name, f.name.slice(0, f.name.indexOf('[')));
  }
  for (const c of SWEEP_CONCURRENCY) ratio(`onceq-insert@c${c}`, `bullmq-insert@c${c}`);
  // Scaling with worker processes, per Redis; the cluster against the single Redis at each N;
  // one process against the in-process worker of the same handler.
  for (const n of WORKER_PROCESSES) {
    if (n === 1) continue;
    ratio(`workers-${n}`, 'workers-1');
    ratio(`cluster-workers-${n}`, 'cluster-workers-1');
  }
  for (const n of WORKER_PROCESSES) ratio(`cluster-workers-${n}`, `workers-${n}`);
  ratio('workers-1', 'onceq-insert');
  // How close each came to PostgreSQL's own commit rate.
  const ceiling = figures.find((f) => f.name === 'pg-commits')?.commitsPerSecond;
  for (const f of figures) {
    if (f.processes === undefined || !ceiling || f.commitsPerSecond === undefined) continue;
    // Three decimals: a figure far below the ceiling would otherwise read 0.01 or 0.
    out[`${f.name} commits/s / pg-commits`] =
      Math.round((f.commitsPerSecond / ceiling) * 1000) / 1000;
  }
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
  printUsageTable(figures.filter((f) => f.cpuCores));
  for (const [k, v] of Object.entries(ratios(figures))) {
    process.stdout.write(`ratio ${k}: ${v}\n`);
    process.stdout.write(`${JSON.stringify({ ratio: k, value: v })}\n`);
  }
}

/** The workers figures and pg-commits: commits and CPU (in cores) over the timed window. */
function printUsageTable(figures: Figure[]): void {
  if (figures.length === 0) return;
  const cores = (v: number | null | undefined) =>
    v === null || v === undefined ? '–' : v.toFixed(2);
  const rows = figures.map((f) => [
    f.name,
    f.processes === undefined ? '–' : String(f.processes),
    String(f.jobsPerSecond),
    String(f.commitsPerSecond),
    String(f.jobsPerCommit),
    cores(f.cpuCores?.postgres),
    cores(f.cpuCores?.redis),
    cores(f.cpuCores?.workers),
    cores(f.cpuCores?.machine),
  ]);
  const header = ['figure', 'procs', 'jobs/s', 'commits/s', 'jobs/commit'];
  header.push('cpu pg', 'cpu redis', 'cpu workers', 'cpu machine');
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  process.stdout.write(`\n${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const r of rows) process.stdout.write(`${line(r)}\n`);
  process.stdout.write(`(cpu in cores over the timed window; this machine has ${cpus().length})\n`);
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
