/**
 * A Redis Cluster with a whole shard down (its master and its replica SIGKILLed, no failover
 * possible): the cluster's state is `fail` until the shard is back. onceq's cluster connections
 * must come back by themselves afterwards, and so must a BullMQ worker on them.
 *
 * The defect these catch: ioredis's ready check. A `connect()` that meets a cluster in state
 * `fail` fails the check, the client reconnects on its own, and the promise the first `connect()`
 * returned is never settled, even once the client is ready. BullMQ awaits that promise when it
 * reconnects a worker's blocking connection (its watchdog drops a blocking read that outlived its
 * deadline, then connects again), so the worker never read the queue again: every worker of a
 * cluster chaos run stopped taking jobs after a shard outage. Real redis-servers, a cluster of
 * this suite's own (it is taken down), restored after each test.
 */
import { expect } from 'chai';
import type { Job, Worker } from 'bullmq';
import { closeRedis, createRedisCluster } from '../../src/redis/connection.js';
import { createRedisBackend } from '../../src/queues/redis-backend.js';
import { startRedisCluster, type RedisCluster } from '../../tools/support/redis-cluster.js';
import { uniqueName } from '../support/env.js';
import { waitFor } from '../support/ledger.js';

/** Takes down the shard that owns `key`'s slot, replica first; returns how to bring it back. */
async function downShard(cluster: RedisCluster, key: string): Promise<() => Promise<void>> {
  const owner = await cluster.slotOwner(key);
  const replicas = (await cluster.replicasOf(owner.port)).map((r) => r.port);
  for (const port of replicas) await cluster.killNode(port);
  await cluster.killNode(owner.port);
  return async () => {
    await cluster.restartNode(owner.port);
    for (const port of replicas) await cluster.restartNode(port);
    await cluster.waitUntilHealthy();
  };
}

/** Whether `promise` settles within `ms` (and how). */
function settlesWithin(promise: Promise<unknown>, ms: number): Promise<string> {
  return Promise.race([
    promise.then(
      () => 'resolved',
      (err: Error) => `rejected: ${err.message}`,
    ),
    new Promise<string>((r) => setTimeout(() => r('pending'), ms)),
  ]);
}

describe('redis: a Redis Cluster shard down whole, then back', function () {
  this.timeout(90_000);
  let cluster: RedisCluster;
  before(async () => {
    cluster = await startRedisCluster();
  });
  after(async () => {
    await cluster?.stop();
  });

  it('a connect made while the cluster is down settles, and the slot is served again', async () => {
    const redis = createRedisCluster({ nodes: cluster.nodes, connectionName: 'onceq-test' });
    let restore: (() => Promise<void>) | undefined;
    try {
      await redis.connect();
      const key = `${uniqueName('outage')}:{k}`;
      await redis.set(key, '1');
      restore = await downShard(cluster, key);
      // The other nodes mark the shard failed after the node timeout (1 s): wait for all of them,
      // so that the connect below meets a failed cluster whichever node it asks.
      await cluster.waitUntilFailed();
      redis.disconnect();
      await waitFor('the client to end', async () => redis.status === 'end');
      const connecting = redis.connect();
      expect(await settlesWithin(connecting, 5_000)).to.equal('resolved');
      await restore();
      restore = undefined;
      // The shard came back empty; the slot is served by it again.
      await waitFor(
        'the slot served again',
        async () => (await redis.set(key, '2').catch(() => undefined)) === 'OK',
      );
      expect(await redis.get(key)).to.equal('2');
    } finally {
      await restore?.().catch(() => undefined);
      await closeRedis(redis);
    }
  });

  it('a BullMQ worker whose blocking read outlived the outage takes jobs again', async () => {
    const redis = createRedisCluster({ nodes: cluster.nodes, connectionName: 'onceq-test' });
    const backend = createRedisBackend({ redis, prefix: uniqueName('outage') });
    const queue = backend.newQueue('outage');
    const done: string[] = [];
    let worker: Worker | undefined;
    let restore: (() => Promise<void>) | undefined;
    try {
      worker = backend.newWorker(
        'outage',
        async (job: Job) => {
          done.push(job.name);
        },
        { concurrency: 4, lockDuration: 3_000, stalledInterval: 3_000, maxStalledCount: 1 },
      );
      worker.on('error', () => undefined);
      void worker.run();
      await queue.add('before', {});
      await waitFor('the first job done', async () => done.includes('before'));
      // Delayed jobs falling due every half second keep the worker's blocking reads short: one
      // of them is in flight when the shard dies and outlives its deadline while it is down.
      for (let i = 1; i <= 20; i++) await queue.add('delayed', {}, { delay: 500 * i });
      restore = await downShard(cluster, `${backend.prefix}:{outage}:outage:wait`);
      await new Promise((r) => setTimeout(r, 8_000));
      await restore();
      restore = undefined;
      // The shard came back empty (the delayed jobs are gone with it); new jobs must be taken.
      for (let i = 0; i < 5; i++) {
        await waitFor('the queue to accept a job', async () =>
          queue.add('after', {}).then(
            () => true,
            () => false,
          ),
        );
      }
      await waitFor(
        'the 5 jobs added after the outage done',
        async () => done.filter((n) => n === 'after').length === 5,
        30_000,
      );
    } finally {
      await restore?.().catch(() => undefined);
      await worker?.close(true).catch(() => undefined);
      await queue.close().catch(() => undefined);
      await backend.close();
      await closeRedis(redis);
    }
  });
});
