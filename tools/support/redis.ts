/**
 * Redis helpers the tools and the tests share.
 */
import type { Redis } from 'ioredis';
import { allKeysPattern } from '../../src/redis/keys.js';

/** Deletes every key under a prefix (BullMQ's and onceq's), a SCAN page at a time. */
export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', allKeysPattern(prefix), 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}
