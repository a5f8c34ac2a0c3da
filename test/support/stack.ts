/**
 * An in-process onceq stack for integration tests: its own schema, its own Redis prefix, a
 * producer and as many workers as a test starts. `close()` stops and removes everything.
 */
import type { Job } from 'bullmq';
import { createProducer, type Producer } from '../../src/producer/producer.js';
import { JobRegistry } from '../../src/jobs/registry.js';
import { ledgerJobs } from '../../src/jobs/examples/ledger/index.js';
import type { JobDefinition } from '../../src/jobs/define-job.js';
import { startWorker, type OnceqWorker, type OnceqWorkerOptions } from '../../src/worker/worker.js';
import {
  createIdService,
  type IdService,
  type IdServiceOptions,
} from '../../src/ids/id-service.js';
import {
  closeRedis,
  createRedis,
  createRedisCluster,
  type RedisClient,
} from '../../src/redis/connection.js';
import { parseClusterNodes } from '../../src/core/cluster-nodes.js';
import type { RedisCluster } from '../../tools/support/redis-cluster.js';
import { sharedCluster, sharedClusterClient } from './shared-cluster.js';
import type { DeliveryOutcome } from '../../src/core/outcome.js';
import type { Db } from '../../src/db/create-db.js';
import type { Backend, BackendKind } from '../../src/queues/backend.js';
import {
  createTestSchema,
  deletePrefix,
  dropQueueSchema,
  TEST_BACKEND,
  testBackend,
  type TestMode,
  testRedis,
  uniqueName,
} from './env.js';

export interface TestStack {
  prefix: string;
  schema: string;
  db: Db;
  /**
   * A Redis connection, in both modes: in PostgreSQL-only mode nothing of onceq's is in it (a
   * test that looks there is a Redis-mode test).
   */
  redis: RedisClient;
  /**
   * On a cluster, its nodes as `REDIS_CLUSTER_NODES` lists them (for a child process on the
   * stack's queues); `undefined` otherwise.
   */
  clusterNodes?: string;
  /** Where the stack's queues and tokens live: {@link TestStackOptions.backend}. */
  backend: Backend;
  registry: JobRegistry;
  producer: Producer;
  /** The producer's id service. */
  ids: IdService;
  /** Outcomes reported by every worker of this stack, in order. */
  outcomes: { outcome: DeliveryOutcome; jobId: string; messageId: string }[];
  startWorker(options?: Partial<OnceqWorkerOptions>): Promise<OnceqWorker>;
  close(): Promise<void>;
}

export interface TestStackOptions {
  jobs?: JobDefinition[];
  maxAttempts?: number;
  backoffMs?: number;
  poolSize?: number;
  /** The producer's bound on outstanding tokens per principal. @defaultValue the producer's */
  maxOutstandingTokens?: number;
  /** Options of the producer's id service (a short lease ttl, for tests of its loss). */
  ids?: Partial<IdServiceOptions>;
  /** A Redis of the test's own (a private redis-server it restarts). @defaultValue the shared one */
  redisUrl?: string;
  /**
   * Redis mode on a Redis Cluster: `true` for the run's shared cluster
   * (test/support/shared-cluster.ts), or a cluster of the test's own (one it kills nodes of).
   */
  cluster?: boolean | RedisCluster;
  /** The mode. @defaultValue `ONCEQ_TEST_BACKEND`, else `redis` */
  backend?: BackendKind;
}

/** The options that put a stack in `mode`: a backend, or the shared cluster. */
export function modeOptions(mode: TestMode): Pick<TestStackOptions, 'backend' | 'cluster'> {
  return mode === 'redis-cluster' ? { cluster: true } : { backend: mode };
}

export async function createTestStack(
  label: string,
  options: TestStackOptions = {},
): Promise<TestStack> {
  const prefix = uniqueName(label);
  const { schema, db, drop } = await createTestSchema(label, options.poolSize ?? 10);
  const redis: RedisClient = options.cluster
    ? options.cluster === true
      ? await sharedClusterClient()
      : createRedisCluster({
          nodes: parseClusterNodes(options.cluster.nodesSpec.split(',')).nodes,
          connectionName: 'onceq-test',
        })
    : options.redisUrl
      ? createRedis({ url: options.redisUrl, connectionName: 'onceq-test' })
      : testRedis();
  if (redis.status === 'wait') await redis.connect();
  const clusterNodes = options.cluster
    ? (options.cluster === true ? await sharedCluster() : options.cluster).nodesSpec
    : undefined;
  const kind = options.cluster ? 'redis' : (options.backend ?? TEST_BACKEND);
  const backend = testBackend(kind, redis, prefix);
  const registry = new JobRegistry([...ledgerJobs, ...(options.jobs ?? [])]);
  const ids = await createIdService(db, options.ids);
  const producer = createProducer({
    db,
    backend,
    registry,
    ids,
    maxAttempts: options.maxAttempts ?? 10,
    backoffMs: options.backoffMs ?? 50,
    maxOutstandingTokens: options.maxOutstandingTokens,
  });
  const workers: OnceqWorker[] = [];
  const outcomes: TestStack['outcomes'] = [];
  return {
    prefix,
    schema,
    db,
    redis,
    clusterNodes,
    backend,
    registry,
    producer,
    ids,
    outcomes,
    async startWorker(overrides = {}) {
      const worker = await startWorker({
        db,
        backend,
        registry,
        concurrency: 10,
        lockDurationMs: 2_000,
        onOutcome: (outcome: DeliveryOutcome, job: Job) =>
          outcomes.push({ outcome, jobId: String(job.id), messageId: job.data?.messageId }),
        ...overrides,
      });
      workers.push(worker);
      return worker;
    },
    async close() {
      await Promise.all(workers.map((w) => w.close(5_000)));
      await producer.close();
      await ids.close();
      await deletePrefix(redis, prefix);
      await closeRedis(redis);
      await backend.close();
      if (kind === 'postgres') await dropQueueSchema(db, prefix);
      await drop();
    },
  };
}
