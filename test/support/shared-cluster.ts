/**
 * One Redis Cluster (3 masters, one replica each, on loopback) shared by every suite of a test
 * file that runs on a cluster: started at the first suite that asks (about 2 s), stopped by the
 * root after-all hook (test/support/hooks.ts, after each file in parallel mode, after the whole
 * run in a serial one) before it looks for leaks. Suites isolate
 * themselves on it by key prefix, as on the shared Redis. A suite that kills nodes starts a
 * cluster of its own instead (tools/support/redis-cluster.ts).
 */
import { createRedisCluster } from '../../src/redis/connection.js';
import type { Cluster } from 'ioredis';
import { startRedisCluster, type RedisCluster } from '../../tools/support/redis-cluster.js';
import { parseClusterNodes } from '../../src/core/cluster-nodes.js';

let shared: Promise<RedisCluster> | undefined;

/** The run's shared cluster, started on first use. */
export function sharedCluster(): Promise<RedisCluster> {
  shared ??= startRedisCluster();
  return shared;
}

/** A connection to the shared cluster (the caller closes it), started on first use. */
export async function sharedClusterClient(name = 'onceq-test'): Promise<Cluster> {
  const cluster = await sharedCluster();
  const client = createRedisCluster({
    nodes: parseClusterNodes(cluster.nodesSpec.split(',')).nodes,
    connectionName: name,
  });
  // Connected, so that `nodes('master')` lists the masters from the start.
  await client.connect();
  return client;
}

/** Stops the shared cluster if a suite started it (the root after-all hook). */
export async function stopSharedCluster(): Promise<void> {
  const started = shared;
  shared = undefined;
  if (started) await (await started).stop();
}
