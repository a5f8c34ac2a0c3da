/**
 * One chaos campaign, end to end: a private Redis, a migrated PostgreSQL schema of its own, the
 * real API and N real workers as child processes, the workload and the nemesis for the given
 * duration, then heal everything, let the run drain, snapshot, stop, and check.
 *
 * Two backends, as onceq has two modes (src/queues/backend.ts):
 * - `redis`: the children get `REDIS_URL` of the private Redis; every fault kind but
 *   `redis-failover` applies. With `redisCluster` the private Redis is a Redis Cluster instead,
 *   3 masters and 3 replicas on loopback (tools/support/redis-cluster.ts), the children get
 *   `REDIS_CLUSTER_NODES`, and the Redis faults act on its nodes (faults.ts), `redis-failover`
 *   included.
 * - `postgres` (PostgreSQL-only mode): no Redis at all; the children get `DATABASE_URL` alone,
 *   so BullMQ's tables live in a schema named by the prefix and the tokens in onceq's schema.
 *   The Redis faults have nothing to act on and are refused; `pgkill` now also cuts the workers'
 *   queue connections (BullMQ's pools and its `LISTEN` session carry the same
 *   `application_name`). The harness reads the queues through the same Backend the children use.
 *
 * Isolation: the campaign's Redis is a `redis-server` it starts on a free port (Redis on this
 * machine is shared, so it never restarts or flushes that one), its key prefix and schemas are
 * fresh names, and the pg sessions of each child carry their own `application_name`, so
 * `pg_terminate_backend` only ever hits the campaign's workers.
 */
import { createWriteStream } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { createDb, type Db } from '../../src/db/create-db.js';
import { ensureDatabase } from '../../src/db/migrate.js';
import { migrateWithLedger } from '../../src/jobs/examples/ledger/migrations.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import { mintApiKey } from '../../src/core/api-key.js';
import {
  closeRedis,
  createRedis,
  createRedisCluster,
  type RedisClient,
} from '../../src/redis/connection.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { createQueueCache } from '../../src/queues/queue-cache.js';
import { checkCampaign, type CheckResult } from './checker.js';
import { emptyKindCounts, Nemesis, type FailoverRecord } from './faults.js';
import { HistoryWriter, readHistory, type MetaEvent, type PhaseEvent } from './history.js';
import { cliCommand, ManagedProcess, siblingModule, withApplicationName } from './processes.js';
import { freePort, sleep } from '../support/child.js';
import { createRandom, deriveSeed, planFaults, type FaultKind } from './schedule.js';
import { probeDrain, readSnapshot } from './snapshot.js';
import { Workload, type WorkloadShares, type WorkloadStats } from './workload.js';
import { createRedisBackend } from '../../src/queues/redis-backend.js';
import { createPostgresBackend } from '../../src/queues/postgres-backend.js';
import type { Backend, BackendKind } from '../../src/queues/backend.js';
import { checkFaultsFor, REDIS_FAULT_KINDS } from './schedule.js';
import { ErrorCode, OnceqError } from '../../src/core/errors.js';

/** Options of {@link runCampaign}. */
export interface CampaignOptions {
  seed: number;
  /** Length of the workload (faults included), ms. */
  durationMs: number;
  workers: number;
  /** Operations per second. */
  rate: number;
  faults: readonly FaultKind[];
  /** The JSON-lines history. */
  historyFile: string;
  /** The children's output. @defaultValue `<historyFile>.log` */
  logFile?: string;
  /** PostgreSQL server; the campaign makes a schema of its own there (two without Redis). */
  databaseUrl: string;
  /**
   * Where the queues and tokens live: a private Redis, or PostgreSQL alone (no Redis started,
   * no `REDIS_URL` given; the Redis faults are refused). @defaultValue `'redis'`
   */
  backend?: BackendKind;
  /** @defaultValue `redis-server` (unused without Redis, and with `redisCluster`) */
  redisServer?: string;
  /**
   * Redis mode on a Redis Cluster of the campaign's own (3 masters, one replica each) instead of
   * one redis-server: the children get `REDIS_CLUSTER_NODES`, and `redis-failover` applies.
   * Needs `redis-server` and `redis-cli` 7.0 or later on the PATH. @defaultValue false
   */
  redisCluster?: boolean;
  /** Workers' lock duration (and claim lease). @defaultValue 2000 */
  lockDurationMs?: number;
  /** @defaultValue 5 */
  maxAttempts?: number;
  /** Jobs in flight per worker. @defaultValue 4 */
  concurrency?: number;
  /** Concurrent HTTP clients. @defaultValue 8 */
  clients?: number;
  /** Mean gap between faults. @defaultValue see `planFaults` */
  faultIntervalMs?: number;
  /** Bound on the drain after the workload. @defaultValue 120 s */
  drainTimeoutMs?: number;
  /**
   * The drain also ends when nothing is live and nothing changed for this long (a reconciler
   * had its chance). @defaultValue 30 s
   */
  drainQuietMs?: number;
  /** Keep the schema afterwards: always, never, or when the run is invalid. @defaultValue 'invalid' */
  keepSchema?: 'always' | 'never' | 'invalid';
  shares?: Partial<WorkloadShares>;
  /** Extra environment for the API and workers (e.g. reconciler settings). */
  env?: Record<string, string>;
  /** Called about once a second with a progress line, and once at the end with `final`. */
  onProgress?: (line: string, final: boolean) => void;
  /** Ends the workload early (Ctrl-C); the run still heals, drains and checks. */
  signal?: AbortSignal;
}

/** What a campaign did and what the checker found. */
export interface CampaignReport {
  valid: boolean;
  result: CheckResult;
  seed: number;
  backend: BackendKind;
  /** The campaign ran on a Redis Cluster of its own. */
  redisCluster: boolean;
  /** Every `redis-failover` injected, with what it lost (empty without a cluster). */
  failovers: FailoverRecord[];
  /** onceq's schema. */
  schema: string;
  /** The Redis key prefix, or in PostgreSQL-only mode the schema of BullMQ's tables. */
  prefix: string;
  /** The schemas (onceq's, and BullMQ's without Redis) were kept. */
  schemaKept: boolean;
  historyFile: string;
  logFile: string;
  planned: Record<FaultKind, number>;
  injected: Record<FaultKind, number>;
  backendsTerminated: number;
  /** Exits the nemesis did not cause, per process. */
  crashes: Record<string, number>;
  workload: WorkloadStats;
  /** Deliveries that ran to an end, from the workers' logs: completed (by outcome) or failed. */
  deliveries: { completed: number; failed: number; outcomes: Record<string, number> };
  workloadMs: number;
  drainMs: number;
  /** False when the drain hit its bound with jobs still live or messages unresolved. */
  drained: boolean;
  /**
   * Nothing could lose queue or token state (no Redis, or no Redis fault): the checker then
   * also counts lost tokens and vanished jobs as anomalies.
   */
  durableStores: boolean;
}

const QUEUES = ['ledger'];
/** Masters of the campaign's Redis Cluster, one replica each. */
const CLUSTER_MASTERS = 3;

/** Runs a campaign; never leaves a child process behind, whatever happens. */
export async function runCampaign(options: CampaignOptions): Promise<CampaignReport> {
  const lockDurationMs = options.lockDurationMs ?? 2_000;
  const maxAttempts = options.maxAttempts ?? 5;
  const backendKind = options.backend ?? 'redis';
  const onCluster = options.redisCluster === true;
  if (onCluster && backendKind === 'postgres') {
    throw new OnceqError(
      ErrorCode.ConfigInvalid,
      'chaos: the postgres backend runs without Redis, so not on a Redis Cluster either',
    );
  }
  // Before anything starts: a fault with nothing to act on would be planned and silently fail.
  checkFaultsFor(backendKind, options.faults, onCluster);
  const redisVariables = ['REDIS_URL', 'REDIS_CLUSTER_NODES'].filter((v) => options.env?.[v]);
  if (backendKind === 'postgres' && redisVariables.length > 0) {
    // It would put the children in Redis mode while the harness reads PostgreSQL's queues.
    throw new OnceqError(
      ErrorCode.ConfigInvalid,
      `chaos: the postgres backend runs without Redis; env must not set ${redisVariables.join(', ')}`,
    );
  }
  const runId = `chaos_${options.seed >>> 0}_${randomBytes(3).toString('hex')}`;
  const schema = runId;
  // Without Redis the prefix names BullMQ's schema: one of its own, beside onceq's, so its
  // tables never meet onceq's and dropping it drops the queues and nothing else.
  const prefix = backendKind === 'redis' ? runId : `${runId}_bullmq`;
  const schemas = backendKind === 'redis' ? [schema] : [schema, prefix];
  const logFile = options.logFile ?? `${options.historyFile}.log`;
  const plan = planFaults({
    seed: options.seed,
    durationMs: options.durationMs,
    faults: options.faults,
    workers: options.workers,
    lockDurationMs,
    intervalMs: options.faultIntervalMs,
    ...(onCluster ? { clusterMasters: CLUSTER_MASTERS } : {}),
  });
  const planned = countKinds(plan.map((f) => f.kind));

  const cleanups: (() => Promise<unknown>)[] = [];
  const processes: ManagedProcess[] = [];
  // A harness that dies without reaching `finally` must not leave workers looping on a dead Redis.
  const killOnExit = () => {
    for (const p of processes) if (p.pid) process.kill(p.pid, 'SIGKILL');
  };
  process.on('exit', killOnExit);
  const log = createWriteStream(logFile, { flags: 'w' });
  log.on('error', () => undefined);
  let history: HistoryWriter | undefined;
  let cluster: RedisCluster | undefined;
  let db: Db | undefined;
  let keep = false;
  try {
    await ensureDatabase(options.databaseUrl);
    db = createDb({
      url: options.databaseUrl,
      schema,
      poolSize: 4,
      applicationName: `onceq-chaos-harness-${runId}`,
    });
    const harnessDb = db;
    await migrateWithLedger(db, schema);
    const minted = mintApiKey();
    await insertApiKey(db, { id: minted.id, principal: 'chaos', hash: minted.hash, admin: false });

    const redisPort = backendKind === 'redis' && !onCluster ? await freePort() : undefined;
    const apiPort = await freePort();
    const redisUrl = redisPort === undefined ? undefined : `redis://127.0.0.1:${redisPort}`;
    const redis =
      redisPort === undefined
        ? undefined
        : new ManagedProcess({
            name: 'redis',
            command: options.redisServer ?? 'redis-server',
            args: [
              '--port',
              String(redisPort),
              '--bind',
              '127.0.0.1',
              '--save',
              '',
              '--appendonly',
              'no',
              '--daemonize',
              'no',
            ],
            env: { PATH: process.env.PATH ?? '' },
            readyText: 'Ready to accept connections',
            log,
          });
    if (redis) {
      processes.push(redis);
      await redis.start();
    }
    if (onCluster) {
      cluster = await startRedisCluster({ masters: CLUSTER_MASTERS, replicasPerMaster: 1 });
    }
    const clusterNodes = cluster?.nodesSpec;

    const cli = cliCommand();
    const appName = (role: string) => `onceq-${runId}-${role}`;
    const childEnv = (role: string): Record<string, string> => ({
      PATH: process.env.PATH ?? '',
      ...(process.env.HOME ? { HOME: process.env.HOME } : {}),
      ...(process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {}),
      // DATABASE_URL alone is what puts the CLI in PostgreSQL-only mode (src/config.ts).
      DATABASE_URL: withApplicationName(options.databaseUrl, appName(role)),
      ...(redisUrl === undefined ? {} : { REDIS_URL: redisUrl }),
      ...(clusterNodes === undefined ? {} : { REDIS_CLUSTER_NODES: clusterNodes }),
      ONCEQ_DB_SCHEMA: schema,
      ONCEQ_PREFIX: prefix,
      ONCEQ_LOCK_DURATION: `${lockDurationMs}ms`,
      ONCEQ_SHUTDOWN_TIMEOUT: '3s',
      ONCEQ_MAX_ATTEMPTS: String(maxAttempts),
      ONCEQ_CONCURRENCY: String(options.concurrency ?? 4),
      ONCEQ_DB_POOL_SIZE: '4',
      ONCEQ_JOBS: siblingModule('poison-job'),
      ONCEQ_HOST: '127.0.0.1',
      ONCEQ_RATE_LIMIT: '0',
      // The reconciler (where built) acts within the drain: a message whose job a Redis fault
      // dropped (or an API kill cut off between acceptance and enqueue) is re-enqueued seconds
      // later, not minutes.
      ONCEQ_RECONCILE_INTERVAL: '2s',
      ONCEQ_RECONCILE_GRACE: '5s',
      PORT: String(apiPort),
      LOG_LEVEL: 'info',
      ...options.env,
    });

    const startMs = Date.now();
    history = new HistoryWriter(options.historyFile, startMs);
    const h = history;
    h.write<MetaEvent>({
      type: 'meta',
      startedAt: new Date(startMs).toISOString(),
      seed: options.seed,
      options: {
        durationMs: options.durationMs,
        workers: options.workers,
        rate: options.rate,
        faults: options.faults,
        lockDurationMs,
        maxAttempts,
        backend: backendKind,
        schema,
        prefix,
        ...(redisPort === undefined ? {} : { redisPort }),
        ...(clusterNodes === undefined ? {} : { redisCluster: clusterNodes }),
        apiPort,
      },
      plan,
    });
    if (redis) redis.options.history = h;

    const api = new ManagedProcess({
      name: 'api',
      command: cli.command,
      args: [...cli.args, 'api'],
      env: childEnv('api'),
      readyText: 'api listening',
      log,
      history: h,
    });
    // Deliveries as the workers saw them end: BullMQ's per-job counters vanish with a Redis
    // fault, the workers' logs do not (deliveries cut short by a kill are not counted).
    const deliveries = { completed: 0, failed: 0, outcomes: {} as Record<string, number> };
    const onWorkerLine = (line: string) => {
      if (line.includes('"msg":"job completed"')) {
        deliveries.completed++;
        const outcome = /"outcome":"([a-z-]+)"/.exec(line)?.[1] ?? 'unknown';
        deliveries.outcomes[outcome] = (deliveries.outcomes[outcome] ?? 0) + 1;
      } else if (line.includes('"msg":"job failed"')) {
        deliveries.failed++;
      }
    };
    const workers = Array.from(
      { length: options.workers },
      (_, i) =>
        new ManagedProcess({
          name: `worker-${i + 1}`,
          command: cli.command,
          args: [...cli.args, 'worker'],
          env: { ...childEnv(`worker-${i + 1}`), LOG_LEVEL: 'debug' },
          readyText: 'worker started',
          onLine: onWorkerLine,
          log,
          history: h,
        }),
    );
    processes.push(api, ...workers);
    await Promise.all([api.start(), ...workers.map((w) => w.start())]);

    // The harness reads and adds jobs through the same Backend as the children, so the workload's
    // direct enqueues and the snapshot use BullMQ's Queue API in both modes.
    let redisClient: ReturnType<typeof createRedis> | undefined;
    let backend: Backend;
    if (redisUrl !== undefined || cluster !== undefined) {
      let client: RedisClient;
      if (cluster) {
        client = createRedisCluster({ nodes: cluster.nodes, connectionName: 'onceq-chaos' });
      } else {
        client = redisClient = createRedis({ url: redisUrl!, connectionName: 'onceq-chaos' });
      }
      cleanups.push(() => closeRedis(client));
      await client.connect();
      backend = createRedisBackend({ redis: client, prefix });
    } else {
      backend = createPostgresBackend({
        connection: withApplicationName(options.databaseUrl, `onceq-chaos-harness-${runId}`),
        prefix,
      });
      cleanups.push(() => backend.close());
    }
    const queueCache = createQueueCache(backend);
    cleanups.unshift(() => queueCache.close());
    const queues = QUEUES.map((name) => queueCache.get(name));

    const workload = new Workload({
      port: apiPort,
      apiKey: minted.key,
      rate: options.rate,
      clients: options.clients,
      random: createRandom(deriveSeed(options.seed, 'workload')),
      history: h,
      db: harnessDb,
      queue: queues[0]!,
      maxAttempts,
      shares: options.shares,
    });
    const nemesis = new Nemesis(
      {
        api,
        workers,
        redis,
        cluster,
        workerAppName: (i) => appName(`worker-${i + 1}`),
        db: harnessDb,
        redisClient,
        inFlight: () => workload.stats.inFlight,
      },
      h,
    );

    // The workload phase, with a progress line.
    const workloadStart = Date.now();
    let applied = 0;
    let probing = false;
    const progress = (phase: string, extra = '') => {
      if (!probing) {
        probing = true;
        sql<{ n: string }>`select count(*)::text as n from inbox`
          .execute(harnessDb)
          .then((r) => (applied = Number(r.rows[0]?.n ?? 0)))
          .catch(() => undefined)
          .finally(() => (probing = false));
      }
      const s = workload.stats;
      const elapsed = Math.round((Date.now() - workloadStart) / 1_000);
      const up = workers.filter((w) => w.running && !w.paused).length;
      const faults = Object.entries(nemesis.injected)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${k} ${n}`)
        .join(' ');
      options.onProgress?.(
        `chaos ${phase} ${elapsed}s/${Math.round(options.durationMs / 1_000)}s | ` +
          `req ${s.requests} ok ${s.ok} fail ${s.fail} none ${s.none} | ` +
          `accepted ${s.accepted} applied ${applied} | faults ${nemesis.total}/${plan.length}` +
          `${faults ? ` (${faults})` : ''} | api ${api.running ? 'up' : 'down'} ` +
          `workers ${up}/${workers.length}` +
          `${redis ? ` redis ${redis.running ? 'up' : 'down'}` : ''}` +
          `${cluster ? ` cluster ${clusterNodesUp(cluster)}/${cluster.nodes.length} up` : ''}${extra}`,
        false,
      );
    };
    const ticker = setInterval(() => progress('run'), 1_000);
    cleanups.unshift(async () => clearInterval(ticker));
    workload.start();
    nemesis.start(plan);
    await waitOrAbort(options.durationMs, options.signal);
    await workload.stop();
    h.write<PhaseEvent>({ type: 'phase', phase: 'workload-done', detail: { ...workload.stats } });
    await nemesis.finish();
    // Everything healthy again before the drain: nothing paused, every process up.
    for (const w of workers) if (w.paused) await w.signal('SIGCONT');
    await Promise.all([redis?.start(), api.start(), ...workers.map((w) => w.start())]);
    // Every fault has healed, so a node down now died on its own: a crash, restarted.
    let clusterCrashes = 0;
    if (cluster) {
      for (const node of cluster.nodes) {
        if (cluster.pid(node.port) !== undefined) continue;
        clusterCrashes++;
        await cluster.restartNode(node.port);
      }
      await cluster.waitUntilHealthy();
    }
    h.write<PhaseEvent>({ type: 'phase', phase: 'faults-healed', detail: { ...nemesis.injected } });
    const workloadMs = Date.now() - workloadStart;
    clearInterval(ticker);

    // Drain: until every accepted message is resolved and nothing is live, or it stops moving.
    const drainStart = Date.now();
    const drainTimeoutMs = options.drainTimeoutMs ?? 120_000;
    const quietMs = options.drainQuietMs ?? 30_000;
    let drained = false;
    let last = '';
    let lastChange = Date.now();
    for (;;) {
      const probe = await probeDrain(harnessDb, schema, queues, workload.acceptedIds).catch(
        () => undefined,
      );
      if (probe) {
        applied = probe.applied;
        if (probe.live === 0 && probe.unresolved.length === 0) {
          drained = true;
          break;
        }
        const state = `${probe.live}/${probe.unresolved.length}/${probe.applied}`;
        if (state !== last) {
          last = state;
          lastChange = Date.now();
        }
        if (probe.live === 0 && Date.now() - lastChange > quietMs) break;
        progress('drain', ` | live ${probe.live} unresolved ${probe.unresolved.length}`);
      }
      if (Date.now() - drainStart > drainTimeoutMs) break;
      await sleep(1_000);
    }
    const drainMs = Date.now() - drainStart;
    h.write<PhaseEvent>({ type: 'phase', phase: 'drained', detail: { drained, drainMs } });

    const tokenStore = backend.openTokenStore({ db: harnessDb });
    const snapshot = await readSnapshot(harnessDb, schema, queues, tokenStore.tokens).finally(() =>
      tokenStore.close(),
    );
    await Promise.all([...workers.map((w) => w.stop(5_000)), api.stop(5_000)]);
    await h.close();
    const crashes: Record<string, number> = {};
    for (const p of processes) if (p.crashes > 0) crashes[p.name] = p.crashes;
    if (clusterCrashes > 0) crashes['redis-cluster'] = clusterCrashes;
    // Only a Redis fault (or a Redis that died on its own) may lose queue or token state.
    const onRedis = redis !== undefined || cluster !== undefined;
    const durableStores =
      !onRedis ||
      (!options.faults.some((k) => REDIS_FAULT_KINDS.includes(k)) &&
        (redis?.crashes ?? 0) === 0 &&
        clusterCrashes === 0);
    const result = checkCampaign(await readHistory(options.historyFile), snapshot, {
      durableStores,
    });
    keep = options.keepSchema === 'always' || (options.keepSchema !== 'never' && !result.valid);
    const report: CampaignReport = {
      valid: result.valid,
      result,
      seed: options.seed,
      backend: backendKind,
      redisCluster: onCluster,
      failovers: [...nemesis.failovers],
      schema,
      prefix,
      schemaKept: keep,
      historyFile: options.historyFile,
      logFile,
      planned,
      injected: { ...nemesis.injected },
      backendsTerminated: nemesis.backendsTerminated,
      crashes,
      workload: { ...workload.stats },
      deliveries,
      workloadMs,
      drainMs,
      drained,
      durableStores,
    };
    options.onProgress?.(
      `chaos done: ${result.valid ? 'valid' : 'INVALID'} | accepted ${result.accepted} ` +
        `applied ${result.applied} lost ${result.lost.length} duplicated ${result.duplicated.length} ` +
        `unexpected ${result.unexpected.length}`,
      true,
    );
    return report;
  } finally {
    for (const c of cleanups) await c().catch(() => undefined);
    await Promise.all(processes.map((p) => p.destroy().catch(() => undefined)));
    await cluster?.stop().catch(() => undefined);
    process.off('exit', killOnExit);
    await history?.close().catch(() => undefined);
    await new Promise<void>((resolve) => log.end(() => resolve()));
    if (db) {
      if (!keep) {
        // BullMQ's schema too without Redis: the queues' tables are the campaign's to remove.
        for (const name of schemas) {
          await sql`drop schema if exists ${sql.id(name)} cascade`
            .execute(db)
            .catch(() => undefined);
        }
      }
      await db.destroy();
    }
  }
}

function countKinds(kinds: FaultKind[]): Record<FaultKind, number> {
  const counts = emptyKindCounts();
  for (const k of kinds) counts[k]++;
  return counts;
}

function clusterNodesUp(cluster: RedisCluster): number {
  return cluster.nodes.filter((n) => cluster.pid(n.port) !== undefined).length;
}

function waitOrAbort(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done);
  });
}
