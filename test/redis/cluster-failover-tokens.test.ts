/**
 * The token store on a Redis Cluster through a failover: once the cluster has promoted a
 * replica, the clients' slot maps are stale and the first commands to the moved slots are
 * answered MOVED. ioredis follows MOVED for a lone command; concurrent token calls must all
 * be answered too (an auto-pipelined batch to one node that meets MOVED for some of its
 * commands returns those errors instead of following them). A cluster of the test's own.
 */
import { expect } from 'chai';
import { createRedisCluster, closeRedis } from '../../src/redis/connection.js';
import { parseClusterNodes } from '../../src/core/cluster-nodes.js';
import { createRedisBackend } from '../../src/queues/redis-backend.js';
import { startRedisCluster, type RedisCluster } from '../../tools/support/redis-cluster.js';
import { uniqueName } from '../support/env.js';
import { toProblem } from '../../src/http/problem.js';

describe('redis: token calls on a Redis Cluster across a failover', function () {
  this.timeout(90_000);
  let cluster: RedisCluster | undefined;
  after(async () => {
    await cluster?.stop();
  });

  it('answers every concurrent call right after a promotion, none failing with MOVED', async () => {
    cluster = await startRedisCluster();
    const redis = createRedisCluster({
      nodes: parseClusterNodes(cluster.nodesSpec.split(',')).nodes,
    });
    const backend = createRedisBackend({ redis, prefix: uniqueName('clfo') });
    const store = backend.openTokenStore({ db: undefined as never });
    try {
      const round = () =>
        Promise.allSettled(
          Array.from({ length: 300 }, (_, i) => store.tokens.issue(`p${i % 7}`, { ttlMs: 60_000 })),
        );
      expect((await round()).filter((r) => r.status === 'rejected')).to.have.length(0);
      const [master] = await cluster.masters();
      await cluster.killMaster(master!.port);
      await cluster.waitForFailover(master!.port);
      const failures = (await round())
        .filter((r): r is PromiseRejectedResult => r.status === 'rejected')
        .map((r) => String((r.reason as Error).message));
      expect(failures).to.deep.equal([]);
    } finally {
      await store.close();
      await closeRedis(redis);
    }
  });
});

describe('redis: a Redis Cluster with a shard down', function () {
  this.timeout(90_000);
  let cluster: RedisCluster | undefined;
  after(async () => {
    await cluster?.stop();
  });

  it('makes the API answer 503 with Retry-After, not 500, while slots are not served', async () => {
    cluster = await startRedisCluster();
    const redis = createRedisCluster({
      nodes: parseClusterNodes(cluster.nodesSpec.split(',')).nodes,
    });
    const backend = createRedisBackend({ redis, prefix: uniqueName('cldn') });
    const store = backend.openTokenStore({ db: undefined as never });
    try {
      await store.tokens.issue('p', { ttlMs: 60_000 });
      // A whole shard: its replica first, so that nothing takes over its slots.
      const [master] = await cluster.masters();
      for (const r of await cluster.replicasOf(master!.port)) await cluster.killNode(r.port);
      await cluster.killNode(master!.port);
      const errors = (
        await Promise.allSettled(
          Array.from({ length: 30 }, (_, i) => store.tokens.issue(`p${i}`, { ttlMs: 60_000 })),
        )
      )
        .filter((r): r is PromiseRejectedResult => r.status === 'rejected')
        .map((r) => r.reason as Error);
      expect(errors.length).to.be.greaterThan(0);
      for (const err of errors) {
        const mapped = toProblem(err);
        expect(mapped.body.status, err.message).to.equal(503);
        expect(mapped.headers['retry-after']).to.match(/^\d+$/);
      }
    } finally {
      await store.close();
      await closeRedis(redis);
    }
  });
});
