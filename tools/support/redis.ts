/**
 * Redis helpers the tools and the tests share.
 */
import type { Cluster, Redis } from 'ioredis';
import { allKeysPattern } from '../../src/redis/keys.js';
import { isCluster, type RedisClient } from '../../src/redis/connection.js';

/**
 * Deletes every key under a prefix (BullMQ's and onceq's), a SCAN page at a time; on a cluster,
 * on every master (SCAN sees one node's keys), a key at a time (one UNLINK may not span slots).
 */
export async function deletePrefix(redis: RedisClient, prefix: string): Promise<void> {
  if (!isCluster(redis)) return deleteOnNode(redis, prefix, (keys) => redis.unlink(...keys));
  // The masters are known once the client has loaded the slot map.
  if (redis.status === 'wait') await redis.connect();
  for (const node of redis.nodes('master')) {
    await deleteOnNode(node, prefix, (keys) => Promise.all(keys.map((k) => redis.unlink(k))));
  }
}

/**
 * Deletes every key under a prefix on one master of a cluster, the one owning `key`'s slot: what
 * that master losing its data (a restart without persistence) does to this deployment, the
 * other masters' keys kept. Resolves with the number of keys deleted.
 */
export async function deletePrefixOnMasterOf(
  redis: Cluster,
  prefix: string,
  key: string,
): Promise<number> {
  if (redis.status === 'wait') await redis.connect();
  const slot = Number(await redis.cluster('KEYSLOT', key));
  const owner = (redis.slots[slot] ?? [])[0];
  const node = redis.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner);
  if (!node) throw new Error(`no master owns slot ${slot} of ${key} (owner ${String(owner)})`);
  let deleted = 0;
  // On the node itself, a key at a time: its keys are in its slots, but not in one slot.
  await deleteOnNode(node, prefix, async (keys) => {
    deleted += keys.length;
    await Promise.all(keys.map((k) => node.unlink(k)));
  });
  return deleted;
}

/**
 * Every key matching `pattern`, sorted: SCAN, never KEYS (the Redis may be shared), on every
 * master of a cluster (SCAN sees one node's keys).
 */
export async function scanKeys(redis: RedisClient, pattern: string): Promise<string[]> {
  if (isCluster(redis) && redis.status === 'wait') await redis.connect();
  const nodes = isCluster(redis) ? redis.nodes('master') : [redis];
  const found: string[] = [];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      found.push(...keys);
    } while (cursor !== '0');
  }
  return found.sort();
}

async function deleteOnNode(
  node: Redis,
  prefix: string,
  unlink: (keys: string[]) => Promise<unknown>,
): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', allKeysPattern(prefix), 'COUNT', 1000);
    cursor = next;
    if (keys.length) await unlink(keys);
  } while (cursor !== '0');
}
